"""Symmetries of soft tree ensembles beyond the permutation of trees: subtree flips and splitting orders.

A soft tree routes an input to its leaves through sigmoid splits ``u_n = w_n . x + b_n``. Every tree
structure here (perfect, oblivious, decision list) is described by one *signed path matrix*
``C[n, l]``: +1 when leaf ``l`` lies left of node ``n`` (reached with probability ``sigmoid(u_n)``),
-1 when right (``sigmoid(-u_n)``), 0 when node ``n`` is not on the leaf's path, so that one tree
computes ``sum_l leaves[l] * prod_{n: C[n,l] != 0} sigmoid(C[n, l] u_n)``.

Decision: a per-tree symmetry is a *signed node permutation with a leaf permutation*
``(src, sign, leaf_src)``: ``w'_j = sign_j w_{src_j}``, ``b'_j = sign_j b_{src_j}``,
``leaves'_l = leaves_{leaf_src_l}``. It preserves the function exactly when
``C[src_j, leaf_src_l] * sign_j == C[j, l]`` for all ``j, l`` (substitute and reorder the product),
and that one test is how every value is checked, for any structure. Subtree flips
(``sigmoid(-u) = 1 - sigmoid(u)``: negate a node and swap its subtrees) and splitting-order
permutations of oblivious trees (the product over levels commutes) are all of this form, and so are
their products: one kind, ``"tree"``, holds them all and composes them as signed permutations.

Elements are built in a normal form, one choice per *factor*: for a perfect tree, flip or not at
each internal node (top-down); for an oblivious tree, flip or not at each level, then a permutation
of the levels; for a decision list, flip or not at its deepest node (whose two children are both
leaves); a modified decision list (no leaf after its deepest node) has none. Distinct choices give
distinct elements, so a uniform choice per factor is a uniform element and the Cartesian product
enumerates the group (:func:`tree_group`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import torch

from ..spec.cache import cached
from ..spec.errors import SpecError
from .extended import register_record

TREE_KINDS = ("perfect", "oblivious", "decision_list", "modified_decision_list")


def _node_leaf_counts(kind: str, depth: int) -> tuple[int, int]:
    if kind not in TREE_KINDS:
        raise SpecError(f"unknown tree kind {kind!r}; choose one of {', '.join(TREE_KINDS)}")
    if depth < 1:
        raise SpecError(f"a soft tree needs depth >= 1, got {depth}")
    if kind == "perfect":
        return 2 ** depth - 1, 2 ** depth
    if kind == "oblivious":
        return depth, 2 ** depth
    return depth, depth + 1 if kind == "decision_list" else depth


@register_record
@dataclass(frozen=True)
class TreeStructure:
    """Record of one ensemble of ``trees`` soft trees in a spec: ``weight [T, N, F]`` (split weights),
    ``bias [T, N]``, ``leaves [T, L, C]``; ``group`` is the permutation group of the trees (acting on
    axis 0 of all three). ``kind`` and ``depth`` fix the per-tree symmetries (module docstring)."""

    record_type = "tree"

    group: str
    kind: str
    depth: int
    trees: int
    weight: str
    bias: str
    leaves: str

    @property
    def nodes(self) -> int:
        return _node_leaf_counts(self.kind, self.depth)[0]

    @property
    def num_leaves(self) -> int:
        return _node_leaf_counts(self.kind, self.depth)[1]

    @cached_property
    def paths(self) -> torch.Tensor:
        """The signed path matrix ``C [N, L]`` (int8: +1 left, -1 right, 0 off the path)."""
        return path_matrix(self.kind, self.depth)

    def validate(self, spec) -> None:
        n, leaves = self.nodes, self.num_leaves
        for name, tail in ((self.weight, (n,)), (self.bias, (n,)), (self.leaves, (leaves,))):
            p = spec[name]
            if p.shape[:2] != (self.trees, *tail):
                raise SpecError(f"tree record '{self.group}': parameter '{name}' has shape {p.shape}, expected "
                                f"[{self.trees}, {tail[0]}, ...] for {self.trees} {self.kind} trees of depth "
                                f"{self.depth}")
            if spec.group(self.group).size != self.trees or (name, 0) not in spec.params_of_group(self.group):
                raise SpecError(f"tree record: group '{self.group}' must be the permutation of the {self.trees} "
                                f"trees and act on axis 0 of '{name}'")


def path_matrix(kind: str, depth: int) -> torch.Tensor:
    n_nodes, n_leaves = _node_leaf_counts(kind, depth)
    c = torch.zeros(n_nodes, n_leaves, dtype=torch.int8)
    for leaf in range(n_leaves):
        if kind in ("perfect", "oblivious"):
            for d in range(depth):
                bit = (leaf >> (depth - 1 - d)) & 1
                node = d if kind == "oblivious" else 2 ** d - 1 + (leaf >> (depth - d))
                c[node, leaf] = -1 if bit else 1
        else:  # a chain: node n exits to leaf n on the left, goes on to node n + 1 on the right
            c[:leaf, leaf] = -1
            if leaf < n_nodes:
                c[leaf, leaf] = 1
    return c


# --------------------------------------------------------------------------- per-tree elements
# An element of one tree's group: (src [..., N], sign [..., N] of +-1, leaf_src [..., L]), long tensors.
Elem = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def identity_elem(s: TreeStructure) -> Elem:
    return torch.arange(s.nodes), torch.ones(s.nodes, dtype=torch.long), torch.arange(s.num_leaves)


def compose_elem(first: Elem, second: Elem) -> Elem:
    """Acting as ``first`` and then ``second`` (shapes broadcast over leading dims)."""
    src1, sg1, l1 = first
    src2, sg2, l2 = second
    src1, src2 = torch.broadcast_tensors(src1, src2)
    sg1, sg2 = torch.broadcast_tensors(sg1, sg2)
    l1, l2 = torch.broadcast_tensors(l1, l2)
    return src1.gather(-1, src2), sg2 * sg1.gather(-1, src2), l1.gather(-1, l2)


def invert_elem(e: Elem) -> Elem:
    src, sign, leaf = e
    inv = src.argsort(-1)
    return inv, sign.gather(-1, inv), leaf.argsort(-1)


def flip_elem(s: TreeStructure, node: int) -> Elem:
    """The subtree flip at ``node``: negate its split, swap its two subtrees (a :class:`SpecError`
    when the structure has no such symmetry at that node)."""
    src, sign, leaf = (t.clone() for t in identity_elem(s))
    if not 0 <= node < s.nodes:
        raise SpecError(f"node {node} is out of range for a tree with {s.nodes} internal nodes")
    sign[node] = -1
    if s.kind == "perfect":
        d = (node + 1).bit_length() - 1
        k = node - (2 ** d - 1)
        for dd in range(d + 1, s.depth + 1):
            shift = dd - d - 1
            for kk in range(2 ** dd):
                if kk >> (dd - d) == k:
                    target = kk ^ (1 << shift)
                    if dd == s.depth:
                        leaf[kk] = target
                    else:
                        src[2 ** dd - 1 + kk] = 2 ** dd - 1 + target
    elif s.kind == "oblivious":
        leaf = leaf ^ (1 << (s.depth - 1 - node))
    elif s.kind == "decision_list" and node == s.nodes - 1:
        leaf[node], leaf[node + 1] = node + 1, node
    else:
        raise SpecError(f"a {s.kind.replace('_', ' ')} has no subtree flip at node {node}: only a node whose two "
                        f"children are both leaves or both subtrees of the same shape can be flipped")
    return src, sign, leaf


def order_elem(s: TreeStructure, order) -> Elem:
    """The splitting-order permutation of an oblivious tree: new level ``j`` uses old level ``order[j]``."""
    if s.kind != "oblivious":
        raise SpecError(f"only oblivious trees have a splitting-order symmetry, not {s.kind.replace('_', ' ')} trees")
    order = torch.as_tensor(order, dtype=torch.long)
    if sorted(order.tolist()) != list(range(s.depth)):
        raise SpecError(f"a splitting order must be a permutation of 0..{s.depth - 1}, got {order.tolist()}")
    d = s.depth
    new = torch.arange(s.num_leaves).unsqueeze(1)
    level = torch.arange(d)
    bits = (new >> (d - 1 - level)) & 1                   # [L, D]: the bit of each new leaf at level j
    leaf = (bits << (d - 1 - order)).sum(1)               # moved to old level order[j]
    return order.clone(), torch.ones(d, dtype=torch.long), leaf


def tree_factors(s: TreeStructure) -> list[list[Elem]]:
    """The normal form of the per-tree group: one list of alternatives per factor (module docstring)."""
    return cached(s, "tree_factors", lambda: _factors(s))


def _factors(s: TreeStructure) -> list[list[Elem]]:
    def with_identity(e):
        return [identity_elem(s), e]
    if s.kind == "perfect":
        return [with_identity(flip_elem(s, n)) for n in range(s.nodes)]
    if s.kind == "oblivious":
        flips = [with_identity(flip_elem(s, d)) for d in range(s.depth)]
        return flips + [[order_elem(s, p) for p in itertools.permutations(range(s.depth))]] if s.depth > 1 else flips
    if s.kind == "decision_list":
        return [with_identity(flip_elem(s, s.nodes - 1))]
    return []


def group_order(s: TreeStructure) -> int:
    out = 1
    for f in tree_factors(s):
        out *= len(f)
    return out


def _stack(elems: list[Elem]) -> Elem:
    return tuple(torch.stack([e[i] for e in elems]) for i in range(3))  # type: ignore[return-value]


def tree_group(s: TreeStructure, limit: int = 4096) -> Elem:
    """Every element of one tree's group, stacked ``[G, N]``, ``[G, N]``, ``[G, L]`` (identity first);
    a :class:`SpecError` when the group has more than ``limit`` elements."""
    def build():
        size = group_order(s)
        if size > limit:
            raise SpecError(f"the group of one {s.kind} tree of depth {s.depth} has {size} elements, more than "
                            f"{limit}: too many to enumerate")
        out = _stack([identity_elem(s)])
        for factor in tree_factors(s):
            alt = _stack(factor)
            out = compose_elem(tuple(t.unsqueeze(1) for t in out), tuple(t.unsqueeze(0) for t in alt))
            out = tuple(t.flatten(0, 1) for t in out)
        return out
    return cached(s, f"tree_group_{limit}", build)


def random_tree_elems(s: TreeStructure, lead: tuple[int, ...], generator: torch.Generator | None) -> Elem:
    """Uniform elements of one tree's group, one per entry of ``lead`` (e.g. ``(T,)`` or ``(B, T)``)."""
    out = tuple(t.expand(*lead, -1) for t in identity_elem(s))
    for factor in tree_factors(s):
        alt = _stack(factor)
        pick = torch.randint(len(factor), lead, generator=generator)
        out = compose_elem(out, tuple(t[pick] for t in alt))
    return out


def check_elems(s: TreeStructure, e: Elem, where: str) -> None:
    """Raise unless every per-tree value is a permutation with signs that preserves the path matrix."""
    src, sign, leaf = e
    for name, t, n in (("node", src, s.nodes), ("leaf", leaf, s.num_leaves)):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise SpecError(f"{where}: the {name} indices must be integers, got {t.dtype}")
        if bool(((t < 0) | (t >= n)).any()) or not torch.equal(t.sort(-1).values, torch.arange(n).expand_as(t)):
            raise SpecError(f"{where}: the {name} indices of some tree are not a permutation of 0..{n - 1}")
    if not bool(((sign == 1) | (sign == -1)).all()):
        raise SpecError(f"{where}: node signs must be +1 or -1")
    c = s.paths.long()
    moved = c[src.unsqueeze(-1), leaf.unsqueeze(-2)] * sign.unsqueeze(-1)
    if not torch.equal(moved, c.expand_as(moved)):
        raise SpecError(f"{where}: some tree's value is not a symmetry of a {s.kind.replace('_', ' ')} tree of depth "
                        f"{s.depth} (it does not map root-to-leaf paths onto paths); build values with "
                        f"random_element, tree_flip or split_order")


from . import tree_kind  # noqa: E402,F401  (registers the "tree" kind with every GroupElement)
