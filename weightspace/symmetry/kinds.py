"""Kinds of symmetry a :class:`~weightspace.symmetry.element.GroupElement` is made of.

A spec's whole group is a semidirect product: neuron permutations, and diagonal symmetries
(positive scalings, sign flips) that a permutation relabels. An element is kept in the canonical
form "permute, then apply every other kind", so a kind needs to know how to draw itself, check
values, act on tensors, invert, combine two of its values, and how a permutation relabels its
values (``P D = relabel(D, P) P``). New kinds (tree flips, splitting orders) plug in with
:func:`register_kind`; the built-in ones are ``"permutation"``, ``"scaling"`` and ``"sign"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..spec.cache import cached
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from .permutation import (Perms, check_permutations, compose_unchecked, invert_unchecked, permute_unchecked,
                          random_permutation)
from .plan import axis_index
from .scaling import check_diagonal
from .scaling import apply_diagonal, random_scaling, random_sign_flip

Values = dict[str, torch.Tensor]


class SymmetryKind:
    """One kind of symmetry; subclass and :func:`register_kind` to add one."""

    name: str = ""

    def random(self, spec: WeightSpaceSpec, generator: torch.Generator | None, batch_size: int | None,
               **options: Any) -> Values:
        raise NotImplementedError

    def check(self, spec: WeightSpaceSpec, values: Mapping[str, Any]) -> Values:
        raise NotImplementedError

    def apply(self, params: Any, spec: WeightSpaceSpec, values: Values):
        """Act on a state dict / WeightSpace / features (values already checked)."""
        raise NotImplementedError

    def inverse(self, spec: WeightSpaceSpec, values: Values) -> Values:
        raise NotImplementedError

    def combine(self, spec: WeightSpaceSpec, first: Values, second: Values) -> Values:
        """The value acting as ``first`` and then ``second``."""
        raise NotImplementedError

    def relabel(self, spec: WeightSpaceSpec, values: Values, perms: Perms) -> Values:
        """``values`` as seen after permuting by ``perms``: ``P D = relabel(D, P) P``."""
        raise NotImplementedError


class PermutationKind(SymmetryKind):
    name = "permutation"

    def random(self, spec, generator, batch_size, **options):
        return random_permutation(spec, generator, batch_size)

    def check(self, spec, values):
        return check_permutations(spec, values)

    def apply(self, params, spec, values):
        return permute_unchecked(params, spec, values)

    def inverse(self, spec, values):
        return invert_unchecked(values)  # values of a GroupElement: checked when it was built

    def combine(self, spec, first, second):
        return compose_unchecked(first, second)

@dataclass(frozen=True)
class _Probe:
    """Where a scaling's neurons sit on one permuted parameter axis: ``pos[j]`` is the first entry of
    neuron ``j``, ``neuron_at[e]`` the neuron owning entry ``e`` (-1 for other entries)."""

    action: Any
    pos: torch.Tensor
    neuron_at: torch.Tensor


def _probes(spec: WeightSpaceSpec) -> dict[str, _Probe]:
    def build():
        out: dict[str, _Probe] = {}
        for p in spec.params:
            perm_axes = {a.axis: a for a in spec.axis_actions(p.name)}
            for act in spec.scale_actions(p.name):
                if act.axis not in perm_axes:
                    continue
                for s in {g for g, *_ in act.segments if g is not None} - set(out):
                    neuron_at = torch.full((act.length,), -1, dtype=torch.long)
                    pos = None
                    for g, size, inner, off in act.segments:
                        if g == s:
                            neuron_at[off:off + size * inner] = torch.arange(size).repeat_interleave(inner)
                            pos = torch.arange(size) * inner + off if pos is None else pos
                    out[s] = _Probe(perm_axes[act.axis], pos, neuron_at)
        return out
    return cached(spec, "scaling_probes", build)


class DiagonalKind(SymmetryKind):
    """Positive scalings (``"scaling"``) or sign flips (``"sign"``): one factor per neuron of each
    scaling of the spec; writers are multiplied by it, readers divided by it."""

    def __init__(self, name: str, what: str):
        self.name, self.what = name, what

    def random(self, spec, generator, batch_size, low: float = 0.5, high: float = 2.0, **options):
        if self.name == "scaling":
            return random_scaling(spec, generator, batch_size, low=low, high=high)
        return random_sign_flip(spec, generator, batch_size)

    def check(self, spec, values):
        return check_diagonal(spec, values, self.what)

    def apply(self, params, spec, values):
        return apply_diagonal(params, spec, values) if values else params

    def inverse(self, spec, values):
        return {k: v.reciprocal() for k, v in values.items()}

    def combine(self, spec, first, second):
        out = dict(first)
        for k, v in second.items():
            out[k] = out[k] * v if k in out else v
        return out

    def relabel(self, spec, values, perms):
        probes = _probes(spec)
        out = {}
        for name, v in values.items():
            probe = probes.get(name)
            batch = v.shape[0] if v.dim() == 2 else None
            if batch is None and any(p.dim() == 2 for p in perms.values()):
                batch = next(p.shape[0] for p in perms.values() if p.dim() == 2)
            idx = None if probe is None else axis_index(probe.action, perms, v.device, batch)
            if idx is None:
                out[name] = v
                continue
            src = probe.neuron_at.to(v.device)[idx[..., probe.pos.to(v.device)]]
            if bool((src < 0).any()):
                raise SpecError(f"the permutation moves neurons of scaling '{name}' onto entries it does not act "
                                f"on; the spec's groups and scalings disagree")
            if v.dim() == 1:
                out[name] = v[src]
            else:
                out[name] = v.gather(-1, src.expand(v.shape[0], -1) if src.dim() == 1 else src)
        return out


KINDS: dict[str, SymmetryKind] = {}


def register_kind(kind: SymmetryKind) -> SymmetryKind:
    """Add a kind of symmetry to every :class:`GroupElement` (acts after permutations, in the order
    kinds were registered)."""
    if not kind.name:
        raise ValueError("a symmetry kind needs a name")
    KINDS[kind.name] = kind
    return kind


register_kind(PermutationKind())
register_kind(DiagonalKind("scaling", "scaling"))
register_kind(DiagonalKind("sign", "sign flip"))
