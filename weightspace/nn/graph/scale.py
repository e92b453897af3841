"""ScaleGMN (Kalogeropoulos et al., NeurIPS 2024) by canonicalization: exact invariance to the
spec's positive scalings and sign flips as well as its permutations.

:func:`canonicalize` maps every point of a scaling orbit to one representative, neuron by neuron:

* positive scaling (ReLU family): divide the neuron's writer entries (every entry the scaling
  multiplies by ``s``: its row of incoming weights, bias, norm affine parameters) by their joint
  L2 norm, and multiply its readers by it (the group action ``ws.scale`` with ``s = 1 / norm``):
  afterwards the writers have unit norm, whatever scale they had.
* sign flips (tanh, sin): multiply the neuron by the sign of its writer entry of largest absolute
  value: afterwards that entry is positive, whatever sign it had.
* both (identity activations): both at once, ``s = sign / norm``.

Why it is exact. Scalings are processed in dependency order: a scaling comes after every scaling
that also acts on its writer tensors (the previous layer's neurons act on this layer's incoming
weights through their readers). By induction, when a scaling's turn comes, its writers differ
between ``w`` and ``g . w`` only by that scaling's own factor ``s_j`` per neuron, so the norm
scales by ``|s_j|`` and the largest entry keeps its position and takes ``sign(s_j)``: the factors
computed for ``g . w`` are those for ``w`` divided by ``s_j``, and both land on the same weights
(up to float rounding, ~1e-16 relative). A permutation only reorders the entries summed or
searched (the max is unique for weights in general position), so canonicalization is permutation
equivariant and the permutation-equivariant GMN on canonical weights is invariant to the whole group.
For the equivariant head the GMN output is mapped back with the inverse of the canonicalizing
element, ``f(w) = D(w)^-1 . GMN(D(w) . w)``, which makes it equivariant (outputs transform as weights).

Limits: a neuron whose writers are all zero has no scale to read (it is left as is), and a spec in
which a scaling depends on itself (recurrent weights ``W_hh``) or two scalings on each other is
refused with a ``SpecError``: no ordering makes the construction exact there.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...space import WeightSpace
from ...graph.build import from_graph
from ...spec.blocks import scale_actions
from ...spec.cache import cached
from ...spec.errors import SpecError
from ...spec.spec import WeightSpaceSpec
from ...symmetry.scaling import apply_diagonal
from .models import GMN


def _plan(spec: WeightSpaceSpec) -> tuple[tuple[str, tuple], ...]:
    """Per scaling, in dependency order: ``(name, ((param, axis from right, ((size, inner, offset), ...)), ...))``
    for its writer actions."""
    def build():
        writers: dict[str, list] = {s.name: [] for s in spec.scalings}
        deps: dict[str, set] = {s.name: set() for s in spec.scalings}
        for param, actions in scale_actions(spec).items():
            for i, act in enumerate(actions):
                mine = [(name, size, inner, off) for name, size, inner, off in act.segments if name is not None]
                if act.exponent <= 0 or not mine:
                    continue
                if act.exponent != 1:
                    raise SpecError(f"ScaleGMN: '{param}' is scaled by a power {act.exponent} of a scaling; only "
                                    f"writers scaled linearly can be canonicalized")
                for name, size, inner, off in mine:
                    writers[name].append((param, act.from_right, (size, inner, off)))
                    for j, other in enumerate(actions):
                        if j != i:
                            deps[name].update(g for g, *_ in other.segments if g is not None)
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name, path):
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise SpecError(f"ScaleGMN cannot canonicalize this spec: scalings {' -> '.join(path + [name])} "
                                f"act on each other's writers (a cycle, as in recurrent weights)")
            state[name] = 1
            for d in sorted(deps[name]):
                visit(d, path + [name])
            state[name] = 2
            order.append(name)

        for s in spec.scalings:
            if not (s.positive or s.sign):
                continue
            if not writers[s.name]:
                raise SpecError(f"ScaleGMN: scaling '{s.name}' has no writer weights to read its scale from")
            visit(s.name, [])
        return tuple((name, tuple(writers[name])) for name in order)
    return cached(spec, "scalegmn_plan", build)


def _writer_stats(tensors: dict[str, torch.Tensor], writers) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of squares [B, size], writer entry of largest |value| [B, size])`` of a scaling."""
    sq = best = None
    for param, axis, (n, inner, off) in writers:
        t = tensors[param]
        b = t.shape[0]
        piece = t.movedim(axis, -1)[..., off:off + n * inner]
        piece = piece.reshape(*piece.shape[:-1], n, inner).movedim(-2, 1).reshape(b, n, -1)
        s = piece.square().sum(-1)
        pos = piece.abs().argmax(-1, keepdim=True)
        val = piece.gather(-1, pos).squeeze(-1)
        if sq is None:
            sq, best = s, val
        else:
            sq = sq + s
            best = torch.where(val.abs() > best.abs(), val, best)
    return sq, best


def canonicalize(w: WeightSpace) -> tuple[WeightSpace, dict[str, torch.Tensor]]:
    """``(canonical weights, factors)``: the representative of ``w``'s orbit under the spec's
    positive scalings and sign flips, and the per-network factors ``[B, size]`` per scaling that
    took ``w`` there (``canonical = D . w`` with ``D`` the diagonal element of these factors)."""
    spec = w.spec
    sizes = {s.name: s for s in spec.scalings}
    cur = w
    factors: dict[str, torch.Tensor] = {}
    for name, writers in _plan(spec):
        sc = sizes[name]
        sq, best = _writer_stats(cur.tensors, writers)
        f = torch.ones_like(sq)
        if sc.positive:
            norm = sq.sqrt()
            f = torch.where(norm > 0, 1 / norm.clamp_min(torch.finfo(norm.dtype).tiny), f)
        if sc.sign:
            f = f * torch.where(best < 0, -1.0, 1.0).to(f)
        if not (sc.positive or sc.sign):
            continue
        factors[name] = f
        cur = apply_diagonal(cur, spec, {name: f})
    return cur, factors


class ScaleGMN(nn.Module):
    """GMN on canonicalized weights: invariant (``out_features=K``) or equivariant (``None``) to
    the spec's permutations, positive scalings and sign flips.

    Takes a ``WeightSpace`` (or a graph from ``ws.to_graph`` of one spec with ``spec=``); other
    options as :class:`GMN`."""

    def __init__(self, hidden: int = 64, layers: int = 4, out_features: int | None = 10, **options):
        super().__init__()
        self.out_features = out_features
        self.gmn = GMN(hidden, layers, out_features, **options)

    def forward(self, w: Any, spec: WeightSpaceSpec | None = None):
        if not isinstance(w, WeightSpace):
            if spec is None or isinstance(spec, (list, tuple)):
                raise SpecError("ScaleGMN canonicalizes weights: pass a WeightSpace, or a graph of one spec with spec=")
            w = from_graph(w, spec)
        canon, factors = canonicalize(w)
        out = self.gmn(canon)
        if self.out_features is not None:
            return out
        return apply_diagonal(out, w.spec, {k: 1 / v for k, v in factors.items()})
