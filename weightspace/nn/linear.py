"""``EquivariantLinear``: the full basis of permutation-equivariant linear maps of a spec's features.

The basis and its grouping come from :mod:`.basis` (once per spec). Internally every tensor is kept
channels-last (``[B, *axes, C]``; the public ``[B, C, *shape]`` tensors are views of that memory), so
channel mixing is one matrix product over all positions with no copy. A forward pass:

1. cuts each input tensor into pieces with fixed axes folded into channels:
   ``[B, *group axes, F * C]`` (a view when the piece has no fixed axis);
2. reduces each piece once per distinct input pattern: a mean over pooled axes, or an ``einsum``
   where a diagonal is taken;
3. per output pattern, multiplies every reduced input by its own block of the pattern's coefficient
   matrix (one ``[C_in * F_in, C_out * F_out]`` block per basis term) and sums them;
4. places the result on the output piece: a broadcasting view (an ``einsum`` with identity tensors
   where a diagonal is written), accumulated in place; pieces are written back into tensors.

No dense ``[P, P]`` matrix is ever built; everything is batched over networks.
"""
from __future__ import annotations

import math
import string

import torch
from torch import nn

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from .basis import CONSTANT, Term, basis, cut_piece, paste_piece
from .features import WeightSpaceFeatures
from .fused import FusedLinear, FusedPlan, add_into, concat_inputs, mix, reduce_all

_LETTERS = string.ascii_lowercase + string.ascii_uppercase[:24]  # 'Y', 'Z' stay for channels, batch


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
        self.equation = "Z" + "".join(letters) + "Y->Z" + out + "Y"
        sizes = {}
        for c, a in zip(canon, [src.vaxes[i] for i in src.group_axes]):
            sizes[c] = a.size
        self.sizes = [src.vaxes[i].size for i in src.group_axes]
        self.count = math.prod(sizes[c] for c in set(canon) - kept)
        diagonal = len(set(canon)) != len(canon)
        # without a diagonal, the reduction is a mean over the pooled axes (kept axes stay in order);
        # ``plan`` may later derive it from a smaller mean of the same piece (a mean of means)
        self.pooled = None if diagonal else frozenset(i for i, c in enumerate(canon) if c not in kept)
        self.parent: tuple | None = None
        self.dims: tuple[int, ...] = tuple(1 + i for i in sorted(self.pooled)) if self.pooled is not None else ()
        self.scale = 1.0 / self.count

    def derive_from(self, key: tuple, pooled: frozenset) -> None:
        """Compute this mean from the mean over ``pooled`` (a subset of this one's pooled axes)."""
        kept_there = [i for i in range(max(self.pooled | pooled) + 1) if i not in pooled]
        self.parent = key
        self.dims = tuple(1 + kept_there.index(i) for i in sorted(self.pooled - pooled))
        self.scale = 1.0 / math.prod(self.sizes[i] for i in self.pooled - pooled)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: the piece, or the parent reduction when there is one."""
        if self.pooled is not None:
            # sum, then scale the small result: the backward is an expand, not a full-size division
            return x.sum(self.dims) * self.scale if self.dims else x
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
        self.equation = ",".join(["Z" + "".join(z_letter[b] for b in self.kept) + "Y"]
                                 + ["".join(ls) for _, ls in deltas])
        self.equation += "->Z" + "".join(out_letters) + "Y"
        # without a diagonal, placing is a view with size-1 axes where the output broadcasts
        single = all(len(pos) == 1 for pos in positions.values())
        self.view = [term.sizes[b] if b in z_letter else 1 for b in self.blocks] if single else None

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, *kept, C]`` -> a tensor broadcastable to ``[B, *output group axes, C]``."""
        if self.view is not None:
            if list(z.shape[1:-1]) == self.view:
                return z
            return z.reshape(z.shape[0], *self.view, z.shape[-1])
        return torch.einsum(self.equation, z, *[_delta(n, r, z) for n, r in self.deltas])


class EquivariantLinear(nn.Module):
    """A linear map ``WeightSpaceFeatures[C_in] -> WeightSpaceFeatures[C_out]`` commuting with every
    permutation of ``spec``'s group, parameterized by the full basis of such maps (every weight-sharing
    pattern between every pair of tensor pieces, biases included when ``bias``).

    ``num_terms`` is the number of basis terms; each has its own ``[C_out * F_out, C_in * F_in]``
    coefficient block (``F``: the piece's fixed entries, e.g. kernel taps). ``activation="relu"``
    applies ReLU to the output in place (the same map as a ``Pointwise(torch.relu)`` after the
    layer, without its full-size temporary); ``fused=False`` forces the autograd path (see
    :mod:`.fused`), which specs with diagonal terms and runs under autocast always take."""

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, out_channels: int, bias: bool = True, *,
                 activation: str | None = None, fused: bool = True):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r} (use a Pointwise module "
                             f"after the layer for any other function)")
        self.activation = activation
        self.spec, self.in_channels, self.out_channels = spec, in_channels, out_channels
        b = basis(spec, bias)
        self.pieces = b.pieces
        self.num_terms = len(b.terms)
        self.reductions: dict[tuple, _Reduction] = {}
        self.groups: list[tuple[int, _Placement, list[tuple[tuple, tuple[int, ...], int]]]] = []
        self.weights = nn.ParameterList()
        self.by_param: dict[str, list[int]] = {n: [] for n in spec.weight_names}
        for i, pc in enumerate(self.pieces):
            if pc is not CONSTANT:
                self.by_param[pc.param].append(i)
        fan_in: dict[int, int] = {}
        by_output = sorted(b.terms_by_output().items(), key=lambda kv: (kv[0][0], -len(kv[0][2])))
        for key, terms in by_output:
            inputs = []
            for t in terms:
                if t.in_key not in self.reductions:
                    self.reductions[t.in_key] = _Reduction(t, self.pieces)
                width = 1 if self.pieces[t.src] is CONSTANT else in_channels * self.pieces[t.src].fixed_numel
                inputs.append((t.in_key, t.in_order, width))
            self.groups.append((terms[0].dst, _Placement(terms[0]), inputs))
            fan_in[terms[0].dst] = fan_in.get(terms[0].dst, 0) + sum(w for *_, w in inputs)
        self.reduction_order = self._plan_reductions()
        self._fused = FusedPlan(self) if fused and FusedPlan.applies(self) else None
        for dst, _, inputs in self.groups:
            rows = out_channels * self.pieces[dst].fixed_numel
            w = torch.randn(rows, sum(width for *_, width in inputs)) / math.sqrt(fan_in[dst])
            self.weights.append(nn.Parameter(w))

    def _plan_reductions(self) -> list[tuple]:
        """Order the reductions so that a mean over more axes is taken from the largest mean over a
        subset of them already computed (a mean of means); only the smallest touch the full piece."""
        order = sorted(self.reductions, key=lambda k: (self.reductions[k].pooled is None,
                                                       len(self.reductions[k].pooled or ())))
        done: dict[int, list[tuple[frozenset, tuple]]] = {}
        for key in order:
            red = self.reductions[key]
            if red.pooled is None or not red.pooled:
                continue
            subsets = [(p, k) for p, k in done.get(red.src, []) if p and p < red.pooled]
            if subsets:
                pooled, parent = max(subsets, key=lambda pk: len(pk[0]))
                red.derive_from(parent, pooled)
            done.setdefault(red.src, []).append((red.pooled, key))
        return order

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
            if pc is CONSTANT:
                cut[i] = ref.new_ones(b, 1, dtype=dtype)
            else:
                cut[i] = cut_piece(x.tensors[pc.param].movedim(1, -1).to(dtype), pc)   # channels last
        if self._fused is not None and not torch.is_autocast_enabled(ref.device.type):   # autocast: per-op casts
            n = len(self.pieces)
            outs = FusedLinear.apply(self._fused, n, *[cut[i] for i in range(n)], *self.weights)
            out_pieces = dict(zip(self._fused.dsts, outs))
        else:
            out_pieces = self._unfused(cut, b)
            if self.activation == "relu":
                out_pieces = {k: v.relu_() for k, v in out_pieces.items()}   # fresh sums: in place
        out = {}
        for name, owned in self.by_param.items():
            shape = self.spec[name].shape
            if len(owned) == 1:                                  # one piece: no assembly needed
                pc = self.pieces[owned[0]]
                y = out_pieces[owned[0]].expand(b, *[pc.vaxes[k].size for k in pc.group_axes], -1)
                out[name] = paste_piece(y, pc, self.out_channels).movedim(-1, 1)
                continue
            t = ref.new_zeros(b, *shape, self.out_channels, dtype=dtype)
            for i in owned:
                pc = self.pieces[i]
                y = out_pieces[i].expand(b, *[pc.vaxes[k].size for k in pc.group_axes], -1)
                t[(slice(None),) + tuple(slice(lo, hi) for lo, hi in pc.ranges)] = paste_piece(y, pc, self.out_channels)
            out[name] = t.movedim(-1, 1)
        return WeightSpaceFeatures(self.spec, out)

    def _unfused(self, cut: dict, b: int) -> dict[int, torch.Tensor]:
        """The autograd path (any spec, diagonal terms included): reduce, mix, place, sum."""
        reduced = reduce_all(self.reductions, self.reduction_order, cut)
        out_pieces: dict[int, list] = {}
        for (dst, place, inputs), w in zip(self.groups, self.weights):
            out_pieces.setdefault(dst, []).append(place(mix(concat_inputs(reduced, inputs), w)))
        out = {}
        for dst, ys in out_pieces.items():        # every y is a fresh product: sum in place
            pc = self.pieces[dst]
            out[dst] = add_into(ys, (b, *[pc.vaxes[k].size for k in pc.group_axes], self.out_channels * pc.fixed_numel))
        return out

    def extra_repr(self) -> str:
        act = f", then {self.activation}" if self.activation else ""
        return (f"{self.in_channels} -> {self.out_channels}{act}, {self.num_terms} basis terms, "
                f"{len(self.pieces)} pieces, {sum(p.numel() for p in self.parameters()):,} parameters")
