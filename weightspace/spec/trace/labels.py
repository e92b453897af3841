"""What each dimension of a traced tensor indexes.

Every dimension of every tensor in the traced graph gets one label:

* ``None``       -- positions that carry no symmetry (batch, pixels, tokens, constants)
* :class:`InputDim` -- an axis of a network input: fixed, and turned into an input site when an op
  reads it as features
* :class:`Uniform` -- a constant that is the same along this axis (``zeros_like``, an expanded
  size-1 axis): it places no demand on anything it meets
* :class:`Feat`  -- a stretch of a :class:`Space` (neurons of a site, or an axis of a parameter),
  possibly split into heads (``path``) or repeated (``inner`` / ``outer`` for flattened positions)

Rules combine labels through :func:`unify` and friends, which turn into restrictions of the
union-find structures in :mod:`.structure`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from . import structure as S


class Space:
    """An index set that symmetries act on: the neurons of a site, or one axis of a parameter."""

    def __init__(self, size: int, var: S.Var, *, kind: str, name: str, diag: S.Var | None = None,
                 param: str | None = None, axis: int | None = None, site_id: int | None = None):
        self.size = size
        self.var = var
        self.diag = diag
        self.kind = kind          # "param" or a site kind: "input", "hidden", "output", "position"
        self.name = name
        self.param, self.axis = param, axis
        self.site_id = site_id
        self.activations: list[tuple[int, int, str]] = []

    @property
    def is_site(self) -> bool:
        return self.kind != "param"

    def var_at(self, start: int, length: int) -> S.Var:
        return S.region(self.var, start, length)

    def diag_at(self, start: int, length: int) -> S.Var:
        return S.region(self.diag, start, length)

    def __repr__(self) -> str:  # pragma: no cover
        return f"Space({self.kind}:{self.name}[{self.size}])"


@dataclass(frozen=True)
class InputDim:
    key: tuple
    size: int


@dataclass(frozen=True)
class Uniform:
    size: int


Step = tuple[str, int, int]  # ("o" | "i", blocks, block size)


@dataclass(frozen=True)
class Feat:
    """Entries ``start:start+length`` of ``space``; after the head splits in ``path``, each index of
    this dimension is (outer repeat, element, inner repeat) in mixed radix ``outer x core x inner``."""

    space: Space
    start: int
    length: int
    path: tuple[Step, ...] = ()
    inner: int = 1
    outer: int = 1
    copies: bool = False  # the ``inner`` repeats hold one value (expand + reshape, repeat_interleave)

    @property
    def core(self) -> int:
        if not self.path:
            return self.length
        step, a, b = self.path[-1]
        return a if step == "o" else b

    @property
    def size(self) -> int:
        return self.outer * self.core * self.inner

    @property
    def plain(self) -> bool:
        return not self.path and self.inner == 1 and self.outer == 1

    def region(self) -> "Feat":
        """The whole stretch, without splits or repeats."""
        return Feat(self.space, self.start, self.length)


Label = Any  # None | InputDim | Uniform | Feat


def label_size(label: Label, fallback: int) -> int:
    return fallback if label is None else label.size


# ------------------------------------------------------------------------------------ resolution


def resolve(f: Feat) -> S.Var:
    """The variable acting on one core index of ``f`` (heads resolved; inner blocks share one
    element of every fibre, since a single tensor axis cannot tell fibres apart)."""
    var = f.space.var_at(f.start, f.length)
    for step, a, b in f.path:
        w = S.split(var, a, b)
        if w.state == "wreath":
            var = w.outer if step == "o" else S.make_shared(w)
        elif step == "o":
            var = S.fixed(a)
        else:
            var = S.make_shared(w)
    return var


def tile(var: S.Var, outer: int) -> S.Var:
    """``var`` covers ``outer`` repeats of one block moved alike; returns the block's variable."""
    if outer == 1:
        return var
    w = S.split(var, outer, var.size // outer)
    if w.state == "wreath":
        w.shared = True
        S.fix(w.outer)
        w = S.normalize(w)
    return S.make_shared(w)


def blocks(var: S.Var, inner: int, copies: bool = False) -> S.Var:
    """``var`` moves blocks of ``inner`` consecutive entries whole; returns the block variable. The
    order inside a block is pinned, unless the other side holds ``copies`` of one value there
    (grouped-query keys repeated per query head): then each block stays free inside."""
    if inner == 1:
        return var
    w = S.split(var, var.size // inner, inner)
    if w.state != "wreath":
        raise S.StructureError("flattened features meet features pinned by an earlier slice")
    if not copies:
        S.fix(w.inner)
    return w.outer


def unify(a: Label, b: Label) -> None:
    """``a`` and ``b`` index the same positions of one computation (aligned dims of an op)."""
    fa, fb = isinstance(a, Feat), isinstance(b, Feat)
    if not fa and not fb:
        return
    if fa and fb:
        _unify_feats(a, b)
        return
    f, other = (a, b) if fa else (b, a)
    if isinstance(other, Uniform):
        return
    S.fix(resolve(f))  # features meet fixed positions or input features


def _unify_feats(a: Feat, b: Feat) -> None:
    if (a.inner, a.outer) == (b.inner, b.outer) and a.core == b.core:
        S.unify(resolve(a), resolve(b))
        return
    if a.size != b.size:
        raise S.StructureError(f"axes of sizes {a.size} and {b.size} cannot be aligned")
    if _unrepeated(b) and not _unrepeated(a):
        a, b = b, a
    if _unrepeated(a):  # a plain or head axis meets a repeated / tiled one (grouped-query k / v)
        v = tile(resolve(a), b.outer)
        v = blocks(v, b.inner, b.copies)
        S.unify(v, resolve(replace(b, inner=1, outer=1, copies=False)))
        return
    raise S.StructureError("two differently flattened feature axes meet")


def _unrepeated(f: Feat) -> bool:
    return f.inner == f.outer == 1 and (not f.path or f.path[-1][0] == "o")


def unify_aligned(pairs: list[tuple[Label, Label]]) -> None:
    """Unify aligned dims of two operands. A head's inner dim is tied to its head dim: when both
    operands carry (head, within-head) pairs at matching positions, whole head structures unify
    (fibre by fibre); a within-head dim met on its own forces one permutation for all heads."""
    done: set[int] = set()
    for i, (a, b) in enumerate(pairs):
        if i in done or not (_is_inner(a) and _is_inner(b)):
            continue
        for j, (oa, ob) in enumerate(pairs):
            if j != i and j not in done and _is_outer_of(oa, a) and _is_outer_of(ob, b):
                _unify_parents(a, b)
                done.update((i, j))
                break
    for i, (a, b) in enumerate(pairs):
        if i not in done:
            unify(a, b)


def _is_inner(f: Label) -> bool:
    return isinstance(f, Feat) and bool(f.path) and f.path[-1][0] == "i" and f.inner == f.outer == 1


def _is_outer_of(o: Label, i: Feat) -> bool:
    return (isinstance(o, Feat) and o.space is i.space and o.start == i.start and o.length == i.length
            and o.inner == o.outer == 1 and len(o.path) == len(i.path) and o.path[:-1] == i.path[:-1]
            and o.path[-1] == ("o",) + i.path[-1][1:])


def _parent(f: Feat) -> Feat:
    return Feat(f.space, f.start, f.length, f.path[:-1])


def _unify_parents(a: Feat, b: Feat) -> None:
    pa, pb = _parent(a), _parent(b)
    _, n, m = a.path[-1]
    va, vb = resolve(pa), resolve(pb)
    S.split(va, n, m)
    S.split(vb, n, m)
    S.unify(va, vb)


# ------------------------------------------------------------------------------------ tensors


@dataclass
class ATensor:
    """A traced tensor: its example value and what each of its dims indexes.

    ``held`` is the stretch of a site whose neuron values this tensor carries (rearranged by views
    and spatial ops, but not mixed across neurons); ``param`` names the parameter whose raw values
    it is (a view of); ``attn`` marks attention scores / probabilities with the (q, k) stretches.
    """

    value: torch.Tensor
    dims: list
    held: Feat | None = None
    param: str | None = None
    attn: tuple | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.dims) != self.value.dim():  # pragma: no cover - internal consistency
            raise AssertionError(f"{len(self.dims)} labels for a {self.value.dim()}-d tensor")

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    def feats(self) -> list[tuple[int, Feat]]:
        return [(i, d) for i, d in enumerate(self.dims) if isinstance(d, Feat)]

    @property
    def has_features(self) -> bool:
        return any(isinstance(d, Feat) for d in self.dims)

    def like(self, value: torch.Tensor, dims: list | None = None, **kw) -> "ATensor":
        """Same provenance, new value / labels."""
        base = dict(held=self.held, param=self.param, attn=self.attn)
        base.update(kw)
        return ATensor(value, list(self.dims if dims is None else dims), **base)
