"""``EquivariantLinear``: the full basis of permutation-equivariant linear maps of a spec's features.

The basis and its grouping come from :mod:`.basis` (once per spec). A forward pass:

1. cuts each input tensor ``[B, C, *shape]`` into pieces with fixed axes folded into channels:
   ``[B, C * F, *group axes]``;
2. reduces each piece once per distinct input pattern (diagonals, means over pooled blocks):
   one ``einsum`` each;
3. per output pattern, concatenates every reduced input along channels, mixes them with one matrix
   (one ``[C_out * F_out, sum C_in * F_in]`` parameter per output pattern, i.e. one coefficient
   block per basis term), and places the result on the output's diagonals / broadcasts: one
   ``einsum`` with identity tensors;
4. writes pieces back into ``[B, C_out, *shape]`` tensors.

No dense ``[P, P]`` matrix is ever built; everything is batched over networks.
"""
from __future__ import annotations

import math
import string

import torch
from torch import nn

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from .basis import CONSTANT, Piece, Term, basis
from .features import WeightSpaceFeatures

_LETTERS = string.ascii_lowercase + string.ascii_uppercase[:24]  # 'Y', 'Z' stay for channels, batch


def _piece_in(x: torch.Tensor, piece: Piece) -> torch.Tensor:
    """``[B, C, *shape] -> [B, C * F, *group axes]`` for one piece."""
    b, c = x.shape[:2]
    for k, (lo, hi) in enumerate(piece.ranges):
        if (lo, hi) != (0, x.shape[2 + k]):
            x = x.narrow(2 + k, lo, hi - lo)
    vaxes = piece.vaxes
    x = x.reshape(b, c, *[a.size for a in vaxes])
    fixed, groups = piece.fixed_axes, piece.group_axes
    x = x.permute(0, 1, *[2 + i for i in fixed], *[2 + i for i in groups])
    return x.reshape(b, c * piece.fixed_numel, *[vaxes[i].size for i in groups])


def _piece_out(y: torch.Tensor, piece: Piece, channels: int) -> torch.Tensor:
    """Inverse of :func:`_piece_in`: ``[B, C * F, *group axes] -> [B, C, *piece shape]``."""
    b = y.shape[0]
    vaxes = piece.vaxes
    fixed, groups = piece.fixed_axes, piece.group_axes
    y = y.reshape(b, channels, *[vaxes[i].size for i in fixed], *[vaxes[i].size for i in groups])
    order = list(fixed) + list(groups)
    inverse = [order.index(i) for i in range(len(vaxes))]
    y = y.permute(0, 1, *[2 + i for i in inverse])
    return y.reshape(b, channels, *[hi - lo for lo, hi in piece.ranges])


def _delta(n: int, rank: int, like: torch.Tensor) -> torch.Tensor:
    """The identity tensor of ``rank`` axes of size ``n`` (ones for rank 1)."""
    d = torch.zeros((n,) * rank, dtype=like.dtype, device=like.device)
    idx = torch.arange(n, device=like.device)
    d[(idx,) * rank] = 1
    return d


class _Reduction:
    """The input side of a set of terms: diagonals and means of one piece (an einsum equation)."""

    def __init__(self, term: Term, pieces):
        src = pieces[term.src]
        self.src = term.src
        canon = term.in_key[1]
        kept = set(term.in_key[2])
        letters = [_LETTERS[c] for c in canon]
        out = "".join(dict.fromkeys(_LETTERS[c] for c in canon if c in kept))
        self.equation = "ZY" + "".join(letters) + "->ZY" + out
        sizes = {}
        for c, a in zip(canon, [src.vaxes[i] for i in src.group_axes]):
            sizes[c] = a.size
        self.count = math.prod(sizes[c] for c in set(canon) - kept)
        self.trivial = self.equation == "ZY" + out + "->ZY" + out and self.count == 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.trivial:
            return x
        y = torch.einsum(self.equation, x)
        return y / self.count if self.count != 1 else y


class _Placement:
    """The output side of a set of terms: kept blocks onto their output axes, broadcasts, diagonals."""

    def __init__(self, term: Term):
        self.blocks = term.out_blocks
        self.kept = term.kept
        letters = iter(_LETTERS)
        z_letter = {b: next(letters) for b in self.kept}
        out_letters, deltas = [], []  # deltas: (size, [letters])
        positions: dict[int, list[int]] = {}
        for i, b in enumerate(self.blocks):
            positions.setdefault(b, []).append(i)
        per_pos = {}
        for b, pos in positions.items():
            if b in z_letter and len(pos) == 1:
                per_pos[pos[0]] = z_letter[b]
                continue
            own = [next(letters) for _ in pos]
            for p, letter in zip(pos, own):
                per_pos[p] = letter
            deltas.append((term.sizes[b], ([z_letter[b]] if b in z_letter else []) + own))
        out_letters = [per_pos[i] for i in range(len(self.blocks))]
        self.deltas = [(n, len(ls)) for n, ls in deltas]
        self.equation = ",".join(["ZY" + "".join(z_letter[b] for b in self.kept)] + ["".join(ls) for _, ls in deltas])
        self.equation += "->ZY" + "".join(out_letters)
        self.trivial = not deltas

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.trivial:
            return z
        return torch.einsum(self.equation, z, *[_delta(n, r, z) for n, r in self.deltas])


class EquivariantLinear(nn.Module):
    """A linear map ``WeightSpaceFeatures[C_in] -> WeightSpaceFeatures[C_out]`` commuting with every
    permutation of ``spec``'s group, parameterized by the full basis of such maps (every weight-sharing
    pattern between every pair of tensor pieces, biases included when ``bias``).

    ``num_terms`` is the number of basis terms; each has its own ``[C_out * F_out, C_in * F_in]``
    coefficient block (``F``: the piece's fixed entries, e.g. kernel taps)."""

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        self.spec, self.in_channels, self.out_channels = spec, in_channels, out_channels
        b = basis(spec, bias)
        self.pieces = b.pieces
        self.num_terms = len(b.terms)
        self.reductions: dict[tuple, _Reduction] = {}
        self.groups: list[tuple[int, _Placement, list[tuple[tuple, tuple[int, ...], int]]]] = []
        self.weights = nn.ParameterList()
        fan_in: dict[int, int] = {}
        for key, terms in b.terms_by_output().items():
            inputs = []
            for t in terms:
                if t.in_key not in self.reductions:
                    self.reductions[t.in_key] = _Reduction(t, self.pieces)
                width = 1 if self.pieces[t.src] is CONSTANT else in_channels * self.pieces[t.src].fixed_numel
                inputs.append((t.in_key, t.in_order, width))
            self.groups.append((terms[0].dst, _Placement(terms[0]), inputs))
            fan_in[terms[0].dst] = fan_in.get(terms[0].dst, 0) + sum(w for *_, w in inputs)
        for dst, _, inputs in self.groups:
            rows = out_channels * self.pieces[dst].fixed_numel
            w = torch.randn(rows, sum(width for *_, width in inputs)) / math.sqrt(fan_in[dst])
            self.weights.append(nn.Parameter(w))

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        if not isinstance(x, WeightSpaceFeatures):
            raise SpecError(f"EquivariantLinear takes WeightSpaceFeatures, got {type(x).__name__} "
                            f"(use WeightSpaceFeatures.from_weightspace(ws))")
        x.check(self.spec, self.in_channels, what="EquivariantLinear")
        b = x.batch_size
        ref = x.tensors[self.spec.weight_names[0]]
        weight = self.weights[0] if len(self.weights) else None
        dtype = weight.dtype if weight is not None else ref.dtype
        cut = {}
        for i, pc in enumerate(self.pieces):
            cut[i] = ref.new_ones(b, 1, dtype=dtype) if pc is CONSTANT else _piece_in(x.tensors[pc.param], pc)
        reduced = {key: red(cut[red.src]) for key, red in self.reductions.items()}
        out_pieces: dict[int, torch.Tensor] = {}
        for (dst, place, inputs), w in zip(self.groups, self.weights):
            zs = []
            for key, order, _ in inputs:
                z = reduced[key]
                if order != tuple(range(len(order))):
                    z = z.permute(0, 1, *[2 + i for i in order])
                zs.append(z)
            z = torch.cat(zs, 1) if len(zs) > 1 else zs[0]
            z = torch.einsum("oc,bc...->bo...", w, z)
            y = place(z)
            out_pieces[dst] = y if dst not in out_pieces else out_pieces[dst] + y
        out = {}
        for name in self.spec.weight_names:
            shape = self.spec[name].shape
            t = ref.new_zeros(b, self.out_channels, *shape, dtype=dtype)
            for i, pc in enumerate(self.pieces):
                if pc.param == name and i in out_pieces:
                    sl = (slice(None), slice(None)) + tuple(slice(lo, hi) for lo, hi in pc.ranges)
                    t[sl] = _piece_out(out_pieces[i], pc, self.out_channels)
            out[name] = t
        return WeightSpaceFeatures(self.spec, out)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, {self.num_terms} basis terms, "
                f"{len(self.pieces)} pieces, {sum(p.numel() for p in self.parameters()):,} parameters")
