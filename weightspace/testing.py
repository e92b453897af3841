"""Public checks that a function respects a spec's symmetry group, as e3nn ships ``assert_equivariant``.

Both draw random group elements (:func:`~weightspace.random_element`), compute in float64, and
report the worst relative error. They also refuse two ways a check can pass vacuously: an element
that does not move the inputs (a spec with no symmetry to test), and a function whose output is
constant (which is trivially invariant and equivariant to everything)::

    from weightspace.testing import assert_equivariant, assert_invariant
    assert_invariant(lambda w: model_of_weights(w), spec, ws)          # e.g. an INR classifier
    assert_equivariant(lambda w: layer(w), spec, features)             # e.g. an equivariant layer

``inputs`` is a state dict, a WeightSpace or features ``name -> Tensor[*lead, *shape]``; the output
of an equivariant function must be one of these too (same spec, or ``out_spec``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch

from .spec.spec import WeightSpaceSpec
from .symmetry.element import GroupElement, random_element


@dataclass(frozen=True)
class SymmetryReport:
    """What a check measured: the worst relative error over the trials, how far the inputs moved
    (relative), and how much the output changed when the inputs were perturbed (0: constant)."""

    worst_error: float
    input_moved: float
    output_variation: float
    trials: int

    @property
    def constant(self) -> bool:
        return self.output_variation == 0.0


def _tensors(x: Any) -> list[torch.Tensor]:
    """Every tensor inside a WeightSpace / features / mapping / sequence / tensor, in a fixed order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if hasattr(x, "tensors") and not isinstance(x, Mapping):
        x = x.tensors
    if isinstance(x, Mapping):
        return [t for k in x for t in _tensors(x[k])]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if hasattr(x, "to_dict") and callable(x.to_dict):  # torch_geometric Data
        return _tensors(x.to_dict())
    return []


def _map(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if hasattr(x, "spec") and hasattr(x, "tensors") and not isinstance(x, Mapping):
        return type(x)(x.spec, {k: fn(v) for k, v in x.tensors.items()})
    if isinstance(x, Mapping):
        return {k: _map(v, fn) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_map(v, fn) for v in x)
    return x


def _float(dtype):
    return lambda t: t.to(dtype) if t.is_floating_point() else t


def _rel_diff(a: Any, b: Any) -> float:
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb):
        raise AssertionError(f"the outputs differ in structure ({len(ta)} vs {len(tb)} tensors)")
    num = den = 0.0
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            raise AssertionError(f"the outputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        if not x.is_floating_point():
            num = max(num, float((x != y).any()))
            continue
        num = max(num, float((x.detach() - y.detach()).abs().max()) if x.numel() else 0.0)
        den = max(den, float(y.detach().abs().max()) if y.numel() else 0.0)
    return num / den if den > 0 else num


def _perturb(x: Any, generator: torch.Generator) -> Any:
    def fn(t):
        if not t.is_floating_point():
            return t
        scale = t.abs().mean().clamp_min(1e-3)
        return t + 0.1 * scale * torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)
    return _map(x, fn)


def _check(fn, spec, inputs, equivariant, out_spec, trials, kinds, generator, dtype, rtol, allow_constant):
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    x = _map(inputs, _float(dtype)) if dtype is not None else inputs
    base = fn(x)
    variation = _rel_diff(fn(_perturb(x, gen)), base)
    if variation == 0.0 and not allow_constant:
        raise AssertionError("the function's output is constant (it did not change when the inputs were "
                             "perturbed), so the check would pass vacuously")
    worst, moved = 0.0, 0.0
    attempts = 0
    # ``trials`` elements, and more (up to 20) while none has moved the inputs: a tiny group draws
    # the identity often
    while attempts < trials or (moved == 0.0 and attempts < trials + 20):
        attempts += 1
        g = random_element(spec, gen, kinds=kinds)
        gx = g.act(x)
        moved = max(moved, _rel_diff(gx, x))
        out = fn(gx)
        if equivariant:
            expect = (g if out_spec is None else GroupElement(out_spec, g.parts)).act(base)
        else:
            expect = base
        worst = max(worst, _rel_diff(out, expect))
    if moved == 0.0:
        raise AssertionError("no random group element moved the inputs: the spec has no symmetry acting on them, "
                             "so the check would pass vacuously")
    report = SymmetryReport(worst, moved, variation, attempts)
    if worst > rtol:
        what = "equivariant" if equivariant else "invariant"
        raise AssertionError(f"the function is not {what}: worst relative error {worst:.3g} > rtol {rtol:g} over "
                             f"{attempts} random group elements (inputs moved by {moved:.3g}, relative)")
    return report


def assert_invariant(fn: Callable[[Any], Any], spec: WeightSpaceSpec, inputs: Any, *, trials: int = 3,
                     kinds: Iterable[str] | None = None, generator: torch.Generator | None = None,
                     dtype: torch.dtype | None = torch.float64, rtol: float = 1e-9,
                     allow_constant: bool = False) -> SymmetryReport:
    """Assert ``fn(act(x, g)) == fn(x)`` for random elements ``g`` of ``spec``'s group.

    ``inputs`` are cast to ``dtype`` (float64 by default; ``None`` keeps them; make ``fn`` accept
    it, e.g. ``module.double()``). ``kinds`` restricts the elements (e.g. ``("permutation",)`` for a
    function only meant to be permutation invariant). Raises ``AssertionError`` with the worst
    relative error; returns a :class:`SymmetryReport`."""
    return _check(fn, spec, inputs, False, None, trials, kinds, generator, dtype, rtol, allow_constant)


def assert_equivariant(fn: Callable[[Any], Any], spec: WeightSpaceSpec, inputs: Any, *,
                       out_spec: WeightSpaceSpec | None = None,
                       trials: int = 3, kinds: Iterable[str] | None = None, generator: torch.Generator | None = None,
                       dtype: torch.dtype | None = torch.float64, rtol: float = 1e-9,
                       allow_constant: bool = False) -> SymmetryReport:
    """Assert ``fn(act(x, g)) == act(fn(x), g)`` for random elements ``g`` of ``spec``'s group.

    The output must be something :func:`~weightspace.act` accepts (state dict, WeightSpace,
    features); ``out_spec`` when it lives in another weight space whose groups carry the same names.
    Other arguments as in :func:`assert_invariant`."""
    return _check(fn, spec, inputs, True, out_spec, trials, kinds, generator, dtype, rtol, allow_constant)
