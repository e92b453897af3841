"""Where each group acts: the one query every tool reads (symmetry actions, alignment, graphs, layers).

A spec stores, per parameter axis, a *layout* (segments that tile the axis). Tools never walk
layouts themselves; they ask here, and the answer is computed once per spec (:mod:`.cache`):

* :func:`axis_actions` — per parameter, the axes a permutation acts on, each as an
  :class:`AxisAction` (its segments with their offsets). The symmetry actions gather along these.
* :func:`scale_actions` — the same for the diagonal symmetries (positive scalings, sign flips),
  with the exponent (+1 for writers of the neurons, -1 for readers).
* :func:`group_blocks` — per group, every :class:`Block` (one stretch of one axis of one tensor) it
  acts on, with the groups acting on the tensor's other axes. Alignment builds its cost matrices
  from these; equivariant layers build their weight-sharing from them.
* :func:`group_forest` — head structure made explicit: a group with ``heads = (parent, block)``
  moves whole blocks as its parent does, so the groups form a forest (roots, children, an order
  with parents first).

Axes are numbered from the left of the parameter's own shape (``axis``) and, for tensors with any
leading dims (a batch ``[B, *shape]``, features ``[B, C, *shape]``), from the right
(``axis - ndim``), which is how the actions index them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cache import cached
from .types import Layout, layout_groups


@dataclass(frozen=True)
class AxisAction:
    """The segments of one axis of one tensor: ``segments[i] = (group or None, size, inner, offset)``
    (``size`` elements of ``inner`` consecutive entries each, starting at entry ``offset``).
    ``exponent`` is +1 for permutations and for scalings' writers, -1 for scalings' readers."""

    param: str
    axis: int
    ndim: int
    length: int
    segments: tuple[tuple[str | None, int, int, int], ...]
    exponent: int = 1

    @property
    def from_right(self) -> int:
        """The axis counted from the right (negative): valid whatever leading dims a tensor has."""
        return self.axis - self.ndim

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g for g, *_ in self.segments if g is not None))


@dataclass(frozen=True)
class Block:
    """One stretch of one axis of one tensor that group ``group`` acts on: ``size`` elements of
    ``inner`` consecutive entries each, from entry ``offset`` of axis ``axis`` of ``param``
    (``ndim`` axes in all). ``others`` are the groups acting on the tensor's other axes; ``role`` and
    ``dtype`` are the tensor's (see :class:`~weightspace.ParamSpec`)."""

    group: str
    param: str
    axis: int
    ndim: int
    offset: int
    size: int
    inner: int
    others: frozenset = frozenset()
    role: str = "parameter"
    dtype: str = "float32"

    @property
    def from_right(self) -> int:
        return self.axis - self.ndim

    @property
    def length(self) -> int:
        return self.size * self.inner

    @property
    def floating(self) -> bool:
        return self.dtype.startswith(("float", "bfloat"))


@dataclass(frozen=True)
class GroupForest:
    """Head structure of a spec's groups. ``roots``: groups without a head parent; ``children[g]``:
    ``(child, block)`` pairs; ``order``: every group, parents before children; ``sizes``."""

    roots: tuple[str, ...]
    children: dict[str, tuple[tuple[str, int], ...]]
    sizes: dict[str, int]
    order: tuple[str, ...]

    def members(self, root: str) -> tuple[str, ...]:
        """``root`` and all its descendants, parents first."""
        out, todo = [], [root]
        while todo:
            g = todo.pop(0)
            out.append(g)
            todo.extend(c for c, _ in self.children.get(g, ()))
        return tuple(out)


def layout_action(layout: Layout, param: str = "", axis: int = 0, ndim: int = 1, exponent: int = 1) -> AxisAction:
    """The :class:`AxisAction` of one layout (a parameter axis, or a dataflow site's neurons)."""
    segs, off = [], 0
    for s in layout:
        segs.append((s.group, s.size, s.inner, off))
        off += s.length
    return AxisAction(param, axis, ndim, off, tuple(segs), exponent)


def axis_actions(spec) -> dict[str, tuple[AxisAction, ...]]:
    """Per parameter (only those a permutation touches), the axes permutations act on."""
    def build():
        out: dict[str, tuple[AxisAction, ...]] = {}
        for p in spec.params:
            acts = tuple(layout_action(lay, p.name, k, len(p.shape)) for k, lay in enumerate(p.axes)
                         if lay is not None and layout_groups(lay))
            if acts:
                out[p.name] = acts
        return out
    return cached(spec, "axis_actions", build)


def scale_actions(spec) -> dict[str, tuple[AxisAction, ...]]:
    """Per parameter (only those a scaling touches), the axes diagonal symmetries act on; the
    segments name scalings and each action carries its exponent."""
    def build():
        out: dict[str, tuple[AxisAction, ...]] = {}
        for p in spec.params:
            acts = tuple(layout_action(a.layout, p.name, a.axis, len(p.shape), a.exponent) for a in p.scales)
            if acts:
                out[p.name] = acts
        return out
    return cached(spec, "scale_actions", build)


def group_blocks(spec) -> dict[str, tuple[Block, ...]]:
    """Per group, every stretch of every tensor axis it acts on (all roles; filter by ``role``)."""
    def build():
        out: dict[str, list[Block]] = {}
        for p in spec.params:
            per_axis = [layout_groups(lay) for lay in p.axes]
            for act in axis_actions(spec).get(p.name, ()):
                others = frozenset(g for j, gs in enumerate(per_axis) if j != act.axis for g in gs)
                for group, size, inner, off in act.segments:
                    if group is not None:
                        out.setdefault(group, []).append(Block(group, p.name, act.axis, act.ndim, off, size, inner,
                                                               others, p.role, p.dtype))
        return {g: tuple(v) for g, v in out.items()}
    return cached(spec, "group_blocks", build)


def group_forest(spec) -> GroupForest:
    """The groups' head structure (see :class:`GroupForest`)."""
    def build():
        children: dict[str, list] = {}
        roots = []
        for g in spec.groups:
            if g.heads is None:
                roots.append(g.name)
            else:
                children.setdefault(g.heads[0], []).append((g.name, g.heads[1]))
        frozen = {k: tuple(v) for k, v in children.items()}
        order: dict[str, None] = {}  # spec order, each group after its parent

        def visit(g):
            if g.name not in order:
                if g.heads is not None:
                    visit(spec.group(g.heads[0]))
                order[g.name] = None

        for g in spec.groups:
            visit(g)
        return GroupForest(tuple(roots), frozen, {g.name: g.size for g in spec.groups}, tuple(order))
    return cached(spec, "group_forest", build)
