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
from ._params import apply_per_tensor, check_batch, require_mapping
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


def as_permutation(name: str, p: Any, size: int | None = None, acts: str = "") -> torch.Tensor:
    """The one check every permutation entering the public API passes (``permute``,
    ``invert_permutation``, ``compose_permutations``, ``GroupElement``, ``node_permutation``): an
    integer tensor ``[n]`` or ``[B, n]`` whose every row holds each of ``0..n-1`` exactly once, with
    ``n`` the group's size when a spec gives it (``acts`` then says which axes the group acts on).
    Returns it as a LongTensor; a :class:`SpecError` names the group and what is wrong."""
    try:
        p = torch.as_tensor(p)
    except (TypeError, ValueError, RuntimeError):
        raise SpecError(f"permutation for group '{name}' must be an integer tensor, got {type(p).__name__}") from None
    if p.dtype.is_floating_point or p.dtype.is_complex or p.dtype == torch.bool:
        raise SpecError(f"permutation for group '{name}' must be an integer tensor, got {p.dtype}")
    if p.dim() not in (1, 2) or (size is not None and p.shape[-1] != size):
        has = f", the group has {size} elements" if size is not None else ""
        raise SpecError(f"permutation for group '{name}' has shape {tuple(p.shape)}{has}"
                        f"{f' (it acts on {acts})' if acts else ''}; expected [size] or [batch, size]")
    p = p.long()
    n = p.shape[-1]
    rows = p if p.dim() == 2 else p.unsqueeze(0)
    bad = ((rows < 0) | (rows >= n)).any(-1) | (rows.clamp(0, max(n - 1, 0)).sort(-1).values
                                                  != torch.arange(n)).any(-1)
    if bool(bad.any()):
        row = rows[int(bad.nonzero()[0])]
        out_of_range = [int(v) for v in row if not 0 <= int(v) < n]
        counts = torch.bincount(row[(row >= 0) & (row < n)], minlength=n)
        what = (f"{out_of_range[0]} is out of range" if out_of_range else
                f"{int(counts.argmax())} appears {int(counts.max())} times and {int((counts == 0).nonzero()[0])} "
                f"is missing")
        where = f" (row {int(bad.nonzero()[0])})" if p.dim() == 2 else ""
        raise SpecError(f"the tensor given for group '{name}' is not a permutation of 0..{n - 1}{where}: {what}")
    return p


def check_permutations(spec: WeightSpaceSpec, perms: Mapping[str, Any]) -> Perms:
    """Validate and convert: every key a group of the spec, every value a permutation of its size
    (:func:`as_permutation`), head-structured groups consistent with their parents. Missing groups
    stay in place."""
    out: Perms = {}
    for name, p in require_mapping(perms, "the permutations").items():
        if name not in spec.group_forest().sizes:
            known = ", ".join(g.name for g in spec.groups) or "none"
            raise SpecError(f"permutation given for unknown group '{name}' (groups of this spec: {known})")
        g = spec.group(name)
        acts = ", ".join(f"{n} axis {k}" for n, k in spec.params_of_group(name)) or "no axis directly"
        out[name] = as_permutation(name, p, g.size, acts)
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


def invert_permutation(perms: Mapping[str, Any]) -> Perms:
    """The inverse element: ``permute(permute(w, p), invert(p)) == w``. Each value must be a
    permutation (:func:`as_permutation`); no spec is needed, so group names are not checked."""
    return invert_unchecked({k: as_permutation(k, p) for k, p in require_mapping(perms, "the permutations").items()})


def compose_permutations(first: Mapping[str, Any], second: Mapping[str, Any]) -> Perms:
    """The element equal to applying ``first`` and then ``second`` (each value checked by
    :func:`as_permutation`; a group in both needs the same size, and the same batch if per network)."""
    first = {k: as_permutation(k, p) for k, p in require_mapping(first, "the first permutations").items()}
    second = {k: as_permutation(k, p) for k, p in require_mapping(second, "the second permutations").items()}
    for k in set(first) & set(second):
        a, b = first[k], second[k]
        if a.shape[-1] != b.shape[-1]:
            raise SpecError(f"cannot compose permutations of group '{k}' of sizes {a.shape[-1]} and {b.shape[-1]}")
        if a.dim() == b.dim() == 2 and a.shape[0] != b.shape[0]:
            raise SpecError(f"cannot compose per-network permutations of group '{k}' for {a.shape[0]} and "
                            f"{b.shape[0]} networks")
    return compose_unchecked(first, second)


def invert_unchecked(perms: Perms) -> Perms:
    """:func:`invert_permutation` of checked permutations (a GroupElement's)."""
    return {k: p.argsort(-1) for k, p in perms.items()}


def compose_unchecked(first: Perms, second: Perms) -> Perms:
    """:func:`compose_permutations` of checked permutations (a GroupElement's)."""
    out: Perms = {}
    for k in set(first) | set(second):
        if k not in second or k not in first:
            out[k] = first[k] if k in first else second[k]
            continue
        a, b = first[k], second[k]
        a, b = (a.expand_as(b), b) if a.dim() < b.dim() else (a, b.expand_as(a))
        out[k] = a.gather(-1, b)
    return out
