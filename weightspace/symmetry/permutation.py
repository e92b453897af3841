"""Permutations of neurons: random elements, the action on weights, inverse and composition.

Convention: a permutation ``p`` of a group moves neuron ``p[j]`` to position ``j``
(``new[..., j, ...] = old[..., p[j], ...]`` on every axis the group acts on).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from einops import rearrange

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ._params import apply_per_tensor, check_batch
from .plan import axis_index, gather_along

Perms = dict[str, torch.Tensor]


def random_permutation(spec: WeightSpaceSpec, generator: torch.Generator | None = None,
                       batch_size: int | None = None) -> Perms:
    """A uniformly random group element: ``{group: LongTensor[size]}`` (``[batch_size, size]`` for a
    different element per network). Head-structured groups move whole heads along with their parent
    group and permute freely within each head."""
    perms: Perms = {}
    lead = () if batch_size is None else (batch_size,)
    for name in spec.group_forest().order:
        g = spec.group(name)
        if g.heads is None:
            perms[name] = torch.rand(*lead, g.size, generator=generator).argsort(-1)
        else:
            parent, block = g.heads
            sigma = perms[parent]
            tau = torch.rand(*lead, g.size // block, block, generator=generator).argsort(-1)
            # head h of the parent's element moves to position h; within it, tau permutes the block
            perms[name] = rearrange(sigma.unsqueeze(-1) * block + tau, "... heads b -> ... (heads b)")
    return {g.name: perms[g.name] for g in spec.groups}


def identity_permutation(spec: WeightSpaceSpec) -> Perms:
    return {g.name: torch.arange(g.size) for g in spec.groups}


def check_permutations(spec: WeightSpaceSpec, perms: Mapping[str, Any]) -> Perms:
    """Validate and convert: every key a group of the spec, every value a permutation of its size,
    head-structured groups consistent with their parents. Missing groups stay in place."""
    out: Perms = {}
    for name, p in perms.items():
        if name not in spec.group_forest().sizes:
            known = ", ".join(g.name for g in spec.groups) or "none"
            raise SpecError(f"permutation given for unknown group '{name}' (groups of this spec: {known})")
        g = spec.group(name)
        p = torch.as_tensor(p)
        if p.dtype.is_floating_point or p.dtype == torch.bool:
            raise SpecError(f"permutation for group '{name}' must be an integer tensor, got {p.dtype}")
        p = p.long()
        if p.shape[-1] != g.size or p.dim() not in (1, 2):
            acts = ", ".join(f"{n} axis {k}" for n, k in spec.params_of_group(name)) or "no axis directly"
            raise SpecError(f"permutation for group '{name}' has shape {tuple(p.shape)}, the group has {g.size} "
                            f"elements (it acts on {acts})")
        if not torch.equal(p.sort(-1).values, torch.arange(g.size).expand_as(p)):
            raise SpecError(f"the tensor given for group '{name}' is not a permutation of 0..{g.size - 1}")
        out[name] = p
    for name, p in out.items():
        g = spec.group(name)
        if g.heads is not None:
            parent, block = g.heads
            sigma = out.get(parent, torch.arange(g.size // block))
            blocks = p.reshape(*p.shape[:-1], g.size // block, block) // block
            if not torch.equal(blocks, sigma.unsqueeze(-1).expand_as(blocks)):
                raise SpecError(f"permutation for head-structured group '{name}' does not move whole heads "
                                f"as its parent group '{parent}' does")
    return out


def permute(params: Any, spec: WeightSpaceSpec, perms: Mapping[str, Any]):
    """Apply a group element to a state dict (one network), a WeightSpace (a batch) or features
    ``name -> Tensor[*lead, *shape]`` (any leading dims, e.g. ``[B, C, *shape]``); ``perms`` may hold
    one element per network as ``[B, size]`` (lined up with the first leading dim). Returns the same
    kind of object."""
    return permute_unchecked(params, spec, check_permutations(spec, perms))


def permute_unchecked(params: Any, spec: WeightSpaceSpec, perms: Perms):
    """:func:`permute` for permutations already checked by :func:`check_permutations`."""
    per_net = any(p.dim() == 2 for p in perms.values())

    def fn(name, t, lead):
        check_batch(perms, lead, "permutation")
        for action in spec.axis_actions(name):
            idx = axis_index(action, perms, t.device, lead[0] if per_net else None)
            if idx is not None:
                t = gather_along(t, action.from_right, idx)
        return t

    return apply_per_tensor(params, spec, fn)


def invert_permutation(perms: Mapping[str, torch.Tensor]) -> Perms:
    """The inverse element: ``permute(permute(w, p), invert(p)) == w``."""
    return {k: torch.as_tensor(p).argsort(-1) for k, p in perms.items()}


def compose_permutations(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> Perms:
    """The element equal to applying ``first`` and then ``second``."""
    out: Perms = {}
    for k in set(first) | set(second):
        if k not in second:
            out[k] = torch.as_tensor(first[k])
        elif k not in first:
            out[k] = torch.as_tensor(second[k])
        else:
            a, b = torch.as_tensor(first[k]), torch.as_tensor(second[k])
            if a.dim() < b.dim():
                a = a.expand_as(b)
            out[k] = a.gather(-1, b) if b.dim() == a.dim() else a[b]
    return out
