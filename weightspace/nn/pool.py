"""``InvariantPool``: features -> ``[B, F]``, invariant to the spec's group.

Each piece of each tensor (see :mod:`.basis`) is averaged over its group axes; its fixed axes
(input / output features, kernel taps, ``inner`` entries) and channels are kept. The result does
not depend on the order of any permuted index, so it is invariant to every group element.
"""
from __future__ import annotations

from torch import nn

import torch

from ..spec.spec import WeightSpaceSpec
from .basis import cut_piece, pieces_of
from .features import WeightSpaceFeatures


class InvariantPool(nn.Module):
    """``WeightSpaceFeatures[B, C] -> Tensor[B, out_features]`` with ``out_features = C * sum of the
    pieces' fixed entries`` (see :meth:`out_features`)."""

    def __init__(self, spec: WeightSpaceSpec):
        super().__init__()
        self.spec = spec
        self.pieces = [pc for name in spec.weight_names for pc in pieces_of(spec, name)]

    def out_features(self, channels: int) -> int:
        return channels * sum(pc.fixed_numel for pc in self.pieces)

    def forward(self, x: WeightSpaceFeatures) -> torch.Tensor:
        x.check(self.spec, what="InvariantPool")
        out = []
        for pc in self.pieces:
            t = cut_piece(x.tensors[pc.param].movedim(1, -1), pc)     # [B, *group axes, F * C]
            out.append(t.mean(dim=tuple(range(1, t.dim() - 1))) if t.dim() > 2 else t)
        return torch.cat(out, 1)
