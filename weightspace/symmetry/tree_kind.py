"""The ``"tree"`` kind of :class:`~weightspace.symmetry.GroupElement`: per-tree subtree flips and
splitting orders of every :class:`~weightspace.symmetry.trees.TreeStructure` in a spec.

Values of one structure (trees permuted by group ``g``) are three flat entries, ``g.node`` and
``g.sign`` ``[T * N]`` and ``g.leaf`` ``[T * L]`` (``[B, ...]`` for one element per network): tree
``t``'s signed node permutation and leaf permutation (see :mod:`.trees`), flattened so that a leading
dim always means "one element per network", as for every other kind. In the canonical form of a
group element the trees are permuted first, and these values then act at the trees' new positions,
so a permutation ``p`` of the trees relabels them as ``values[p]``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..spec.errors import SpecError
from ._params import apply_per_tensor, require_mapping
from .extended import symmetry_records
from .kinds import SymmetryKind, register_kind
from .trees import TreeStructure, check_elems, compose_elem, invert_elem, random_tree_elems

PARTS = ("node", "sign", "leaf")


def tree_structures(spec) -> tuple[TreeStructure, ...]:
    return symmetry_records(spec, TreeStructure)


def _unflat(s: TreeStructure, values: Mapping[str, torch.Tensor]):
    sizes = (s.nodes, s.nodes, s.num_leaves)
    return tuple(values[f"{s.group}.{k}"].unflatten(-1, (s.trees, n)) for k, n in zip(PARTS, sizes))


def _flat(s: TreeStructure, elem) -> dict[str, torch.Tensor]:
    return {f"{s.group}.{k}": t.flatten(-2) for k, t in zip(PARTS, elem)}


def _take(t: torch.Tensor, idx: torch.Tensor, axis: int, lead: tuple[int, ...]) -> torch.Tensor:
    """``t [*lead, T, X, ...]`` gathered on ``axis`` (from the right) by ``idx [T, X]`` or ``[B, T, X]``."""
    shape = [1] * t.dim()
    shape[t.dim() + axis - 1] = idx.shape[-2]
    shape[t.dim() + axis] = idx.shape[-1]
    if idx.dim() == 3:
        shape[0] = idx.shape[0]
    return torch.take_along_dim(t, idx.reshape(shape), dim=t.dim() + axis)


def _signs(t: torch.Tensor, sign: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * t.dim()
    shape[t.dim() + axis - 1] = sign.shape[-2]
    shape[t.dim() + axis] = sign.shape[-1]
    if sign.dim() == 3:
        shape[0] = sign.shape[0]
    return t * sign.reshape(shape).to(t.dtype)


class TreeKind(SymmetryKind):
    """Subtree flips and splitting orders, per tree (the trees' own permutation is ``"permutation"``)."""

    name = "tree"

    def random(self, spec, generator, batch_size, **options):
        out: dict[str, torch.Tensor] = {}
        for s in tree_structures(spec):
            lead = (s.trees,) if batch_size is None else (batch_size, s.trees)
            out.update(_flat(s, random_tree_elems(s, lead, generator)))
        return out

    def check(self, spec, values):
        values = require_mapping(values, "the tree values")
        structures = {s.group: s for s in tree_structures(spec)}
        out: dict[str, torch.Tensor] = {}
        for key in values:
            group, _, part = key.rpartition(".")
            if group not in structures or part not in PARTS:
                known = ", ".join(f"{g}.{p}" for g in structures for p in PARTS) or "none: the spec has no trees"
                raise SpecError(f"tree value given for unknown entry '{key}' (entries: {known})")
        for group, s in structures.items():
            keys = [f"{group}.{p}" for p in PARTS]
            given = [k for k in keys if k in values]
            if not given:
                continue
            if len(given) != 3:
                raise SpecError(f"tree values of '{group}' need all of {', '.join(keys)}; got {', '.join(given)}")
            vals = {}
            for k, n in zip(keys, (s.nodes, s.nodes, s.num_leaves)):
                v = torch.as_tensor(values[k])
                if v.dim() not in (1, 2) or v.shape[-1] != s.trees * n:
                    raise SpecError(f"tree value '{k}' has shape {tuple(v.shape)}; expected [{s.trees * n}] "
                                    f"({s.trees} trees x {n}) or [batch, {s.trees * n}]")
                vals[k] = v.long() if not v.dtype.is_floating_point else v
            check_elems(s, _unflat(s, vals), f"tree values of '{group}'")
            out.update({k: v.long() for k, v in vals.items()})
        return out

    def apply(self, params: Any, spec, values):
        where: dict[str, tuple] = {}
        for s in tree_structures(spec):
            if f"{s.group}.node" not in values:
                continue
            src, sign, leaf = _unflat(s, values)
            where[s.weight] = (src, sign, -2)
            where[s.bias] = (src, sign, -1)
            where[s.leaves] = (leaf, None, -2)
        if not where:
            return params

        def fn(name, t, lead):
            if name not in where:
                return t
            idx, sign, axis = where[name]
            if idx.dim() == 3 and (not lead or lead[0] != idx.shape[0]):
                raise SpecError(f"tree values for {idx.shape[0]} networks, but the weights have leading dims "
                                f"{list(lead)}")
            idx = idx.to(t.device)
            t = _take(t, idx, axis, lead)
            return t if sign is None else _signs(t, sign.to(t.device), axis)

        return apply_per_tensor(params, spec, fn)

    def inverse(self, spec, values):
        out = {}
        for s in tree_structures(spec):
            if f"{s.group}.node" in values:
                out.update(_flat(s, invert_elem(_unflat(s, values))))
        return out

    def combine(self, spec, first, second):
        out = {}
        for s in tree_structures(spec):
            a, b = f"{s.group}.node" in first, f"{s.group}.node" in second
            if a and b:
                out.update(_flat(s, compose_elem(_unflat(s, first), _unflat(s, second))))
            elif a or b:
                src = first if a else second
                out.update({f"{s.group}.{p}": src[f"{s.group}.{p}"] for p in PARTS})
        return out

    def relabel(self, spec, values, perms):
        out = dict(values)
        for s in tree_structures(spec):
            p = perms.get(s.group)
            if p is None or f"{s.group}.node" not in values:
                continue
            moved = []
            for t in _unflat(s, values):
                idx = p.to(t.device).unsqueeze(-1)
                if t.dim() < idx.dim():
                    t = t.unsqueeze(0)
                elif idx.dim() < t.dim():
                    idx = idx.unsqueeze(0)
                moved.append(torch.take_along_dim(t, idx, dim=-2))
            out.update(_flat(s, moved))
        return out


register_kind(TreeKind())


def _structure(spec, group: str | None) -> TreeStructure:
    structures = tree_structures(spec)
    if not structures:
        raise SpecError("this spec has no tree structures (build it with SoftTreeEnsemble.weight_space_spec())")
    if group is None:
        if len(structures) > 1:
            raise SpecError(f"the spec has several tree ensembles ({', '.join(s.group for s in structures)}); "
                            f"say which with group=")
        return structures[0]
    for s in structures:
        if s.group == group:
            return s
    raise SpecError(f"no tree ensemble permuted by group '{group}' (known: {', '.join(s.group for s in structures)})")


def tree_element(spec, tree: int, elem, group: str | None = None):
    """The :class:`GroupElement` acting by the per-tree element ``elem = (src, sign, leaf_src)`` on tree
    ``tree`` alone (other trees fixed)."""
    from .element import GroupElement
    from .trees import identity_elem

    s = _structure(spec, group)
    if not 0 <= tree < s.trees:
        raise SpecError(f"tree {tree} is out of range for an ensemble of {s.trees} trees")
    full = [t.expand(s.trees, -1).clone() for t in identity_elem(s)]
    for t, e in zip(full, elem):
        t[tree] = torch.as_tensor(e)
    return GroupElement(spec, {"tree": _flat(s, full)})


def tree_flip(spec, tree: int, node: int, group: str | None = None):
    """The subtree flip at internal ``node`` (heap order for perfect trees, level for oblivious ones)
    of tree ``tree``, as a :class:`GroupElement`."""
    from .trees import flip_elem

    return tree_element(spec, tree, flip_elem(_structure(spec, group), node), group)


def split_order(spec, tree: int, order, group: str | None = None):
    """The splitting-order permutation of oblivious tree ``tree`` (new level ``j`` = old ``order[j]``)."""
    from .trees import order_elem

    return tree_element(spec, tree, order_elem(_structure(spec, group), order), group)
