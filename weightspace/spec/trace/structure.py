"""Union-find over symmetry structures of index sets.

A :class:`Var` stands for the symmetry group acting on ``size`` indices (the neurons of a site, one
axis of a parameter, a stretch of either). Tracing starts with free variables and *restricts* them
as ops demand; every restriction leaves a subgroup, so a spec is never wrong in the permissive way:

``leaf``    the full symmetric group S_n (a free set of exchangeable neurons)
``fixed``   the trivial group (input / output features, positions)
``concat``  a product of groups acting on consecutive stretches (splits, concatenations)
``wreath``  ``outer`` (A blocks) x ``inner`` (B per block): a valid element moves whole blocks by an
            element of ``outer`` and permutes inside each block by an element of ``inner`` -- the
            same one for all blocks when ``shared``, independent ones otherwise (attention heads).
``link``    merged into another variable (union-find pointer)

The same class serves the diagonal (scale / sign) symmetries, which only use leaf / fixed / concat
and carry on each leaf the set of kinds still allowed (``{"positive", "sign"}``).
"""
from __future__ import annotations

import itertools
from typing import Iterator

from .. import vocab

_order = itertools.count()
ALL_KINDS = vocab.ALL  # the diagonal symmetry kinds: positive rescaling and sign flips


class StructureError(Exception):
    """Two demands on one index set that no supported group structure satisfies."""


class Var:
    __slots__ = ("size", "state", "link", "children", "outer", "inner", "shared", "origin", "name",
                 "order", "kinds", "base")

    def __init__(self, size: int, state: str, origin: str = "op", name: str = "", kinds=None):
        self.size = size
        self.state = state
        self.link: Var | None = None
        self.children: list[Var] = []
        self.outer: Var | None = None
        self.inner: Var | None = None
        self.shared = False
        self.origin = origin      # "op": created by an op's output; "param": a parameter axis
        self.name = name
        self.order = next(_order)
        # None for permutation variables; for diagonal ones the scaling kinds still allowed
        self.kinds = None if kinds is None else frozenset(kinds)
        self.base = (name, 0)  # (name of the whole it was cut from, offset in it), for slice names

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        v = find(self)
        if v.state == "concat":
            return f"Concat({v.children})"
        if v.state == "wreath":
            return f"Wreath({v.outer!r}, {v.inner!r}, shared={v.shared})"
        return f"{v.state}:{v.name or '?'}[{v.size}]"


def leaf(size: int, name: str = "", origin: str = "op", kinds=None) -> Var:
    return Var(size, "leaf", origin, name, kinds)


def fixed(size: int) -> Var:
    return Var(size, "fixed", "op", "")


def concat(children: list[Var]) -> Var:
    if len(children) == 1:  # a wrapper around one variable would let it be unified into itself
        return children[0]
    v = Var(sum(c.size for c in children), "concat")
    v.children = list(children)
    return v


def find(v: Var) -> Var:
    root = v
    while root.state == "link":
        root = root.link
    while v.state == "link" and v.link is not root:
        v.link, v = root, v.link
    return root


def _link(child: Var, parent: Var) -> None:
    child.state, child.link = "link", parent
    child.children, child.outer, child.inner = [], None, None


def _better(a: Var, b: Var) -> tuple[Var, Var]:
    """Representative and absorbed of two leaves: op-created beats parameter axes, then the older."""
    ka = (a.origin != "op", a.order)
    kb = (b.origin != "op", b.order)
    return (a, b) if ka <= kb else (b, a)


# ------------------------------------------------------------------------------------ traversal


def leaves(v: Var) -> Iterator[Var]:
    v = find(v)
    if v.state in ("leaf", "fixed"):
        yield v
    elif v.state == "concat":
        for c in v.children:
            yield from leaves(c)
    elif v.state == "wreath":
        yield from leaves(v.outer)
        yield from leaves(v.inner)


def is_trivial(v: Var) -> bool:
    """True when no permutation survives: every leaf fixed or an unclaimed parameter axis."""
    return all(lf.state == "fixed" or lf.origin == "param" for lf in leaves(v))


def fix(v: Var) -> None:
    """Restrict to the trivial group."""
    for lf in list(leaves(v)):
        lf.state = "fixed"
        if lf.kinds is not None:
            lf.kinds = frozenset()


def restrict_kinds(v: Var, kinds) -> None:
    """Diagonal variables: keep only the kinds of scaling allowed by ``kinds``."""
    kinds = frozenset(kinds)
    for lf in list(leaves(v)):
        if lf.state == "leaf" and lf.kinds is not None:
            lf.kinds = lf.kinds & kinds
            if not lf.kinds:
                lf.state = "fixed"


def _claim(v: Var, by: Var) -> None:
    """A free set merged into structure ``v``: parameter-axis leaves become real groups (when ``by``
    was made by an op) and diagonal leaves keep only the kinds ``by`` allows."""
    for i, lf in enumerate(list(leaves(v))):
        if lf.state != "leaf":
            continue
        if by.origin == "op" and lf.origin == "param":
            lf.origin, lf.name, lf.order = "op", f"{by.name}.{i}" if i else by.name, by.order
    if by.kinds is not None:
        restrict_kinds(v, by.kinds)


def copy(v: Var, suffix: str) -> Var:
    """A fresh variable with the same structure (independent fibres of a wreath)."""
    v = find(v)
    if v.state == "leaf":
        return leaf(v.size, f"{v.name}{suffix}", v.origin, v.kinds)
    if v.state == "fixed":
        return fixed(v.size)
    if v.state == "concat":
        return concat([copy(c, suffix) for c in v.children])
    w = Var(v.size, "wreath", v.origin, f"{v.name}{suffix}")
    w.outer, w.inner, w.shared = copy(v.outer, suffix), copy(v.inner, suffix), v.shared
    return w


def normalize(v: Var) -> Var:
    """A wreath whose blocks can no longer move is a concatenation of its fibres."""
    v = find(v)
    if v.state == "wreath" and find(v.outer).state == "fixed" and _all_fixed(v.outer):
        n = v.outer.size
        fibres = [v.inner] * n if v.shared else [copy(v.inner, f"#{k}") for k in range(n)]
        v.state, v.children, v.outer, v.inner = "concat", fibres, None, None
    return v


def _all_fixed(v: Var) -> bool:
    return all(lf.state == "fixed" for lf in leaves(v))


# ------------------------------------------------------------------------------------ unification


def unify(a: Var, b: Var) -> Var:
    """Demand that ``a`` and ``b`` carry the same group element; returns the representative."""
    a, b = normalize(a), normalize(b)
    if a is b:
        return a
    if a.size != b.size:
        raise StructureError(f"index sets of sizes {a.size} and {b.size} cannot be identified")
    if a.state == "fixed" or b.state == "fixed":
        keep, other = (a, b) if a.state == "fixed" else (b, a)
        fix(other)
        _link(other, keep)
        return keep
    if a.state == "leaf" and b.state == "leaf":
        rep, other = _better(a, b)
        if rep.kinds is not None:
            rep.kinds = rep.kinds & other.kinds
            if not rep.kinds:
                rep.state = "fixed"
        _link(other, rep)
        return rep
    if a.state == "leaf" or b.state == "leaf":
        lf, st = (a, b) if a.state == "leaf" else (b, a)
        _claim(st, lf)
        _link(lf, st)
        return st
    if a.state == "concat" and b.state == "concat":
        _align(a, b)
        for ca, cb in zip(list(a.children), list(b.children)):
            unify(ca, cb)
        _link(b, a)
        return a
    if a.state == "wreath" and b.state == "wreath":
        if a.outer.size != b.outer.size:
            raise StructureError(
                f"features split into {a.outer.size} blocks in one place and {b.outer.size} in another")
        unify(a.outer, b.outer)
        unify(a.inner, b.inner)
        a.shared = a.shared or b.shared
        _link(b, a)
        return a
    raise StructureError("head-structured features meet a concatenation of other features")


def _offsets(v: Var) -> list[int]:
    out, o = [], 0
    for c in v.children:
        out.append(o)
        o += c.size
    return out


def _cut(v: Var, pos: int) -> None:
    """Make ``pos`` a boundary between children of the concat ``v``."""
    if pos <= 0 or pos >= v.size:
        return
    for i, off in enumerate(_offsets(v)):
        c = v.children[i]
        if off == pos:
            return
        if off < pos < off + c.size:
            region(c, 0, pos - off)
            c = find(c)
            if c.state != "concat":  # pragma: no cover - region() always splits or raises
                raise StructureError("internal: cut failed")
            v.children[i:i + 1] = c.children
            return


def _align(a: Var, b: Var) -> None:
    cuts = sorted(set(_offsets(a)[1:]) | set(_offsets(b)[1:]))
    for p in cuts:
        _cut(a, p)
        _cut(b, p)


def region(v: Var, start: int, length: int) -> Var:
    """The variable acting on indices ``start:start+length`` of ``v``, splitting ``v`` if needed."""
    v = normalize(v)
    if start == 0 and length == v.size:
        return v
    if start < 0 or length <= 0 or start + length > v.size:
        raise StructureError(f"slice {start}:{start + length} outside an index set of size {v.size}")
    if v.state in ("leaf", "fixed"):
        pieces = []
        if start:
            pieces.append(_piece(v, 0, start))
        mid = _piece(v, start, length)
        pieces.append(mid)
        if start + length < v.size:
            pieces.append(_piece(v, start + length, v.size - start - length))
        v.state, v.children = "concat", pieces
        return mid
    if v.state == "concat":
        _cut(v, start)
        _cut(v, start + length)
        offs = _offsets(v)
        i0, i1 = offs.index(start), (offs + [v.size]).index(start + length)
        if i1 - i0 == 1:
            return v.children[i0]
        group = concat(v.children[i0:i1])
        v.children[i0:i1] = [group]
        return group
    raise StructureError("a slice through head-structured features (only whole heads can be sliced "
                         "once the head axis is fixed)")


def _piece(v: Var, start: int, length: int) -> Var:
    if v.state == "fixed":
        return fixed(length)
    base, off = v.base
    a = off + start
    p = leaf(length, f"{base}[{a}:{a + length}]" if base else "", v.origin, v.kinds)
    p.base = (base, a)
    return p


def split(v: Var, a: int, b: int) -> Var:
    """Make ``v`` (size ``a*b``) a wreath of ``a`` blocks of ``b``; returns the wreath (or a concat of
    ``a`` fibres when the blocks are already pinned in place)."""
    v = normalize(v)
    if v.size != a * b:
        raise StructureError(f"cannot split {v.size} indices into {a} x {b}")
    if v.state == "wreath":
        if v.outer.size == a:
            return v
        raise StructureError(f"features split into {v.outer.size} blocks before, {a} now")
    if v.state == "leaf":
        v.outer = leaf(a, f"{v.name}.heads", v.origin, v.kinds)
        v.inner = leaf(b, f"{v.name}.head", v.origin, v.kinds)
        v.state, v.shared = "wreath", False
        return v
    if v.state == "fixed":
        v.outer, v.inner, v.state, v.shared = fixed(a), fixed(b), "wreath", True
        return v
    if len(v.children) == a and all(c.size == b for c in v.children):
        return v
    # a concat whose pieces are unions of whole blocks: split each piece on its own
    offs = _offsets(v)
    if all(o % b == 0 for o in offs):
        _cut_blocks(v, b)
        return v
    raise StructureError(f"a split of {v.size} features into {a} x {b} cuts through an earlier slice")


def _cut_blocks(v: Var, b: int) -> None:
    for p in range(b, v.size, b):
        _cut(v, p)


def fibre(v: Var, k: int, b: int) -> Var:
    """Block ``k`` (of size ``b``) of a wreath whose blocks are pinned: the fibre's own variable."""
    v = normalize(v)
    if v.state == "wreath":
        fix(v.outer)
        v = normalize(v)
    return region(v, k * b, b)


def make_shared(v: Var) -> Var:
    """All blocks of a wreath must be permuted alike; returns the within-block variable."""
    v = normalize(v)
    if v.state == "wreath":
        v.shared = True
        return v.inner
    if v.state == "concat":
        first = v.children[0]
        for c in v.children[1:]:
            unify(first, c)
        return v.children[0]
    return v
