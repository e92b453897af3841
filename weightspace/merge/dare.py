"""DARE (Yu et al., ICML 2024, "Language models are Super Mario"): drop and rescale task vectors."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..inputs import hand_back
from ..spec.spec import WeightSpaceSpec
from ._checks import merge_weights, require_finite
from .task_arithmetic import add_to_base, task_vectors
from .ties import elect_and_merge


def drop_and_rescale(tv: torch.Tensor, drop_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Zero each entry with probability ``drop_rate`` and divide the survivors by
    ``1 - drop_rate`` (the task vector's expectation is unchanged)."""
    if drop_rate <= 0:
        return tv
    keep = torch.rand(tv.shape, generator=generator) >= drop_rate
    return tv * keep.to(tv.device) / (1 - drop_rate)


def dare(base: Any, models: Sequence[Any], drop_rate: float = 0.9, scale: float = 1.0,
         weights: Sequence[float] | None = None, combine: str = "sum", seed: int = 0,
         spec: WeightSpaceSpec | None = None):
    """``base + scale * combine_i(w_i * DARE(theta_i - base))``.

    ``combine="sum"`` adds the dropped-and-rescaled task vectors (DARE + task arithmetic);
    ``combine="ties"`` elects signs and takes the disjoint mean as TIES does, without trimming
    (DARE-TIES). Seeded: one generator draws every mask in entry order.
    """
    scale = require_finite("scale", scale)
    if not 0 <= drop_rate < 1:              # also refuses NaN
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if combine not in ("sum", "ties"):
        raise ValueError(f"combine must be 'sum' or 'ties', got {combine!r}")
    b, tvs, names, as_ws, spec = task_vectors(base, models, spec)
    w = merge_weights(weights, len(tvs))
    gen = torch.Generator().manual_seed(seed)
    merged = {}
    for n in names:
        dropped = [wi * drop_and_rescale(tv[n], drop_rate, gen) for wi, tv in zip(w, tvs)]
        merged[n] = sum(dropped) if combine == "sum" else elect_and_merge(dropped)
    return hand_back(add_to_base(b, names, scale, merged), as_ws, spec)
