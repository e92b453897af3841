"""SIREN (Sitzmann et al., NeurIPS 2020): an MLP with sine activations, used for INRs."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn


class SIREN(nn.Module):
    """``x -> sin(w0 * (W1 x + b1)) -> ... -> W_L h + b_L + output_offset``.

    Initialization follows the SIREN paper: first layer ``U(-1/in, 1/in)``, later layers
    ``U(-sqrt(6/in)/w0, sqrt(6/in)/w0)``. ``output_offset`` adds a constant to the output (DWSNets'
    MNIST INRs use 0.5). State dict keys: ``layers.{i}.weight`` / ``layers.{i}.bias``.
    """

    def __init__(self, in_features: int = 2, hidden: Sequence[int] = (32, 32), out_features: int = 1,
                 w0: float = 30.0, output_offset: float = 0.0):
        super().__init__()
        widths = [in_features, *hidden, out_features]
        self.w0 = float(w0)
        self.output_offset = float(output_offset)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for i, layer in enumerate(self.layers):
            fan_in = layer.in_features
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.w0
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        h = coords
        for layer in self.layers[:-1]:
            h = torch.sin(self.w0 * layer(h))
        return self.layers[-1](h) + self.output_offset
