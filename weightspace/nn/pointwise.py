"""Small equivariant modules on features: pointwise nonlinearity, channel normalization, dropout.

Each acts on every entry alike (or on its channels only), so it commutes with every permutation
of the weight space.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .features import WeightSpaceFeatures


class Pointwise(nn.Module):
    """Apply ``fn`` (default ReLU) to every feature entry."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor] | nn.Module = torch.relu):
        super().__init__()
        self.fn = fn

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        return x.map(self.fn)


class ChannelNorm(nn.Module):
    """Normalize each entry's channel vector (LayerNorm over channels), with a learned per-channel
    affine map shared by all entries: equivariant because it never mixes entries."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        return x.map(lambda t: self.norm(t.movedim(1, -1)).movedim(-1, 1))


class FeatureDropout(nn.Module):
    """Dropout of individual feature entries (equivariant in distribution), active in training."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        if not self.training or self.p == 0.0:
            return x
        return x.map(lambda t: nn.functional.dropout(t, self.p, True))
