"""The weight-sharing basis of equivariant linear maps between weight spaces, derived from the spec.

Design (after Universal Neural Functionals, Zhou et al. 2024, with head structure and segments):

* Every learned-on tensor is cut into **pieces**: one per combination of its axes' segments (a
  fused q/k/v projection gives three pieces, a concatenation two). Each axis of a piece becomes
  *virtual axes*: a group axis of ``size`` elements (for a head-structured group, the parent's head
  axis followed by the within-head axis, recursively) and a fixed axis for ``inner`` entries,
  fixed segments, kernel taps and every other axis no group acts on. Fixed axes are folded into
  the channels, so only group axes remain.
* A linear map from piece ``I`` to piece ``O`` that commutes with the group is a sum over the
  group's orbits on pairs of index tuples. For symmetric groups an orbit is a **partition** of the
  group axes of ``O`` and ``I`` into blocks of equal indices (blocks of one group only, at most
  ``size`` blocks per group). For a head-structured group (block permutations of a parent, with
  independent permutations inside each head), within-head axes may share a block only when their
  head axes do, and a head holds at most ``block`` blocks of one child.
* A basis term acts as: take the diagonal of the input over each block, average over blocks with
  no output axis, mix channels with the term's own matrix, broadcast over blocks with no input
  axis, and place on the diagonal of the output over each block. (These "diagram" terms span the
  same space as the orbit indicators, by a triangular change of basis.) A constant input piece
  with no axes gives the equivariant biases.
* Terms are grouped by their output side (output piece, its blocks, which are kept): every input
  reduced to the same kept blocks is concatenated along channels and mixed by one matrix, then
  placed once. Input reductions are shared by every output that needs them.

Everything here is index bookkeeping, computed once per spec; :mod:`.linear` runs it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import torch

from ..spec.cache import cached
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec


@dataclass(frozen=True)
class VAxis:
    """A virtual axis of a piece: ``group`` None for a fixed axis; ``parent`` the index (among the
    piece's virtual axes) of the head axis a within-head axis hangs under."""

    size: int
    group: str | None = None
    parent: int | None = None


@dataclass(frozen=True)
class Piece:
    """One block of one tensor: ``ranges[k]`` the slice of axis ``k``; ``split[k]`` the virtual
    axes axis ``k`` reshapes into; ``vaxes`` all of them in order."""

    param: str
    ranges: tuple[tuple[int, int], ...]
    split: tuple[tuple[VAxis, ...], ...]

    @property
    def vaxes(self) -> tuple[VAxis, ...]:
        out: list[VAxis] = []
        for axes in self.split:
            base = len(out)
            out.extend(VAxis(a.size, a.group, None if a.parent is None else a.parent + base) for a in axes)
        return tuple(out)

    @property
    def group_axes(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.vaxes) if a.group is not None)

    @property
    def fixed_axes(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.vaxes) if a.group is None)

    @property
    def fixed_numel(self) -> int:
        return math.prod(self.vaxes[i].size for i in self.fixed_axes)


CONSTANT = Piece("", (), ())  # the bias input: one channel of ones, no axes


@dataclass(frozen=True)
class Term:
    """One basis element from input piece ``src`` to output piece ``dst``.

    Group axes of the output are positions ``0 .. n_out - 1``, those of the input ``n_out ..``;
    ``out_blocks`` / ``in_blocks`` give each position's block; ``kept`` the blocks with positions on
    both sides, in the order of their first output position; ``sizes`` each block's index range."""

    dst: int
    src: int
    out_blocks: tuple[int, ...]
    in_blocks: tuple[int, ...]
    kept: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def out_key(self) -> tuple:
        """What the output side depends on: terms with equal keys share one channel mix."""
        return (self.dst, self.out_blocks, self.kept)

    @property
    def in_key(self) -> tuple:
        """What the input reduction depends on (shared by every output that needs it): the input
        piece, its blocks relabeled in order of appearance, and which of those are kept."""
        canon = _canonical(list(self.in_blocks))
        kept = {c for b, c in zip(self.in_blocks, canon) if b in self.kept}
        return (self.src, canon, tuple(sorted(kept)))

    @property
    def in_order(self) -> tuple[int, ...]:
        """For each kept block (in ``kept`` order), its index among the input reduction's axes."""
        canon = dict(zip(self.in_blocks, _canonical(list(self.in_blocks))))
        ranks = sorted(canon[b] for b in self.kept)
        return tuple(ranks.index(canon[b]) for b in self.kept)


@dataclass(frozen=True)
class Basis:
    pieces: tuple[Piece, ...]          # the last one is CONSTANT
    terms: tuple[Term, ...]

    def terms_by_output(self) -> dict[tuple, list[Term]]:
        out: dict[tuple, list[Term]] = {}
        for t in self.terms:
            out.setdefault(t.out_key, []).append(t)
        return out


# ------------------------------------------------------------------------------------ pieces


def _expand(spec: WeightSpaceSpec, group: str, size: int) -> list[VAxis]:
    """Virtual axes of ``size`` elements of ``group``: head parents first, recursively."""
    g = spec.group(group)
    if g.heads is None:
        return [VAxis(size, group)]
    parent, block = g.heads
    if size % block:
        raise SpecError(f"group '{group}' has {size} elements on an axis, not a multiple of its head size {block}")
    outer = _expand(spec, parent, size // block)
    return outer + [VAxis(block, group, len(outer) - 1)]


def _segments(spec: WeightSpaceSpec, name: str, k: int) -> list[tuple[tuple[int, int], tuple[VAxis, ...]]]:
    """Per axis: ``(range, virtual axes)`` of each segment (one fixed segment when no group acts)."""
    n = spec[name].shape[k]
    action = next((a for a in spec.axis_actions(name) if a.axis == k), None)
    if action is None:
        return [((0, n), (VAxis(n),) if n > 1 else ())]
    out = []
    for group, size, inner, off in action.segments:
        length = size * inner
        if group is None:
            axes: tuple[VAxis, ...] = (VAxis(length),) if length > 1 else ()
        else:
            axes = tuple(_expand(spec, group, size)) + ((VAxis(inner),) if inner > 1 else ())
        out.append(((off, off + length), axes))
    return out


def pieces_of(spec: WeightSpaceSpec, name: str) -> list[Piece]:
    per_axis = [_segments(spec, name, k) for k in range(len(spec[name].shape))]
    return [Piece(name, tuple(r for r, _ in combo), tuple(a for _, a in combo)) for combo in product(*per_axis)]


def cut_piece(x: torch.Tensor, piece: Piece) -> torch.Tensor:
    """Channels-last ``[B, *shape, C] -> [B, *group axes, F * C]`` for one piece."""
    b, c = x.shape[0], x.shape[-1]
    for k, (lo, hi) in enumerate(piece.ranges):
        if (lo, hi) != (0, x.shape[1 + k]):
            x = x.narrow(1 + k, lo, hi - lo)
    vaxes = piece.vaxes
    x = x.reshape(b, *[a.size for a in vaxes], c)
    fixed, groups = piece.fixed_axes, piece.group_axes
    if fixed:
        x = x.permute(0, *[1 + i for i in groups], *[1 + i for i in fixed], len(vaxes) + 1)
    return x.reshape(b, *[vaxes[i].size for i in groups], piece.fixed_numel * c)


def paste_piece(y: torch.Tensor, piece: Piece, channels: int) -> torch.Tensor:
    """Inverse of :func:`cut_piece`: ``[B, *group axes, F * C] -> [B, *piece shape, C]``."""
    b = y.shape[0]
    vaxes = piece.vaxes
    fixed, groups = piece.fixed_axes, piece.group_axes
    if fixed:
        y = y.reshape(b, *[vaxes[i].size for i in groups], *[vaxes[i].size for i in fixed], channels)
        order = list(groups) + list(fixed)
        y = y.permute(0, *[1 + order.index(i) for i in range(len(vaxes))], len(vaxes) + 1)
    return y.reshape(b, *[hi - lo for lo, hi in piece.ranges], channels)


# ------------------------------------------------------------------------------------ partitions


def _set_partitions(items: list[int]):
    """All set partitions of ``items`` as lists of blocks."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]
        yield [[first]] + part


def orbit_partitions(positions: list[VAxis], spec: WeightSpaceSpec) -> list[tuple[int, ...]]:
    """Block labels (one per position) for every orbit of the group on index tuples at these
    positions (see the module docstring for head-structured groups)."""
    by_group: dict[str, list[int]] = {}
    for i, a in enumerate(positions):
        by_group.setdefault(a.group, []).append(i)
    order = [g for g in spec.group_forest().order if g in by_group]
    choices = [list(_set_partitions(by_group[g])) for g in order]
    out = []
    for combo in product(*choices):
        label = [0] * len(positions)
        nb = 0
        for blocks in combo:
            for block in blocks:
                for i in block:
                    label[i] = nb
                nb += 1
        if _valid(positions, label, spec):
            out.append(_canonical(label))
    return out


def _valid(positions: list[VAxis], label: list[int], spec: WeightSpaceSpec) -> bool:
    groups_blocks: dict[str, set[int]] = {}
    under: dict[tuple[str, int], set[int]] = {}
    for i, a in enumerate(positions):
        if a.parent is not None:
            parent_labels = {label[positions[j].parent] for j in range(len(positions)) if label[j] == label[i]}
            if len(parent_labels) != 1:
                return False
            under.setdefault((a.group, parent_labels.pop()), set()).add(label[i])
        else:
            groups_blocks.setdefault(a.group, set()).add(label[i])
    for g, blocks in groups_blocks.items():
        if len(blocks) > spec.group(g).size:
            return False
    for (g, _), blocks in under.items():
        if len(blocks) > spec.group(g).heads[1]:
            return False
    return True


def _canonical(label: list[int]) -> tuple[int, ...]:
    seen: dict[int, int] = {}
    return tuple(seen.setdefault(x, len(seen)) for x in label)


# ------------------------------------------------------------------------------------ basis


def basis(spec: WeightSpaceSpec, bias: bool = True) -> Basis:
    """The full basis of equivariant linear maps of ``spec``'s features (cached per spec)."""
    def build():
        pieces = [pc for name in spec.weight_names for pc in pieces_of(spec, name)]
        if bias:
            pieces.append(CONSTANT)
        terms = []
        for d, dst in enumerate(pieces):
            if dst is CONSTANT:
                continue
            out_pos = _positions(dst)
            for s, src in enumerate(pieces):
                positions = out_pos + _positions(src, offset=len(out_pos))
                for label in orbit_partitions(positions, spec):
                    terms.append(_term(d, s, label, len(out_pos), positions))
        return Basis(tuple(pieces), tuple(terms))
    return cached(spec, f"equivariant_basis_{bias}", build)


def _positions(piece: Piece, offset: int = 0) -> list[VAxis]:
    """The piece's group axes, with ``parent`` renumbered from virtual-axis indices to positions."""
    vaxes, group_axes = piece.vaxes, piece.group_axes
    where = {v: k + offset for k, v in enumerate(group_axes)}
    return [VAxis(vaxes[i].size, vaxes[i].group, None if vaxes[i].parent is None else where[vaxes[i].parent])
            for i in group_axes]


def _term(d: int, s: int, label: tuple[int, ...], n_out: int, positions: list[VAxis]) -> Term:
    out_b, in_b = label[:n_out], label[n_out:]
    kept = tuple(dict.fromkeys(b for b in out_b if b in set(in_b)))
    nb = max(label) + 1 if label else 0
    sizes = [0] * nb
    for b, a in zip(label, positions):
        sizes[b] = a.size
    return Term(d, s, out_b, in_b, kept, tuple(sizes))
