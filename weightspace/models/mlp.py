"""Multilayer perceptrons."""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn

_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "silu": nn.SiLU,
         "leaky_relu": nn.LeakyReLU}


def mlp(widths: Sequence[int], activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """``nn.Sequential(Linear, act, [Dropout], Linear, act, ..., Linear)``; without dropout its state
    dict matches :meth:`WeightSpaceSpec.mlp` (``0.weight``, ``2.weight``, ...)."""
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(_ACTS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
