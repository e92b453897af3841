"""TIES merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint merge."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..inputs import hand_back
from ..spec.spec import WeightSpaceSpec
from ._checks import merge_weights, require_finite
from .task_arithmetic import add_to_base, task_vectors


def trim(tv: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``round(density * numel)`` entries of largest magnitude (at least one when
    ``density > 0``), zero the rest."""
    if density >= 1:
        return tv
    k = int(round(density * tv.numel()))
    if density > 0:
        k = max(k, 1)
    if k == 0:
        return torch.zeros_like(tv)
    flat = tv.reshape(-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().topk(k).indices] = True
    return (flat * keep).reshape(tv.shape)


def elect_and_merge(tvs: list[torch.Tensor]) -> torch.Tensor:
    """Per entry: the elected sign is the sign of the summed task vectors; the result is the mean of
    the entries that agree with it (non-zero ones only), 0 where none does."""
    stack = torch.stack(tvs)                                   # [N, ...]
    sign = torch.sign(stack.sum(0))
    agree = (torch.sign(stack) == sign) & (stack != 0)
    count = agree.sum(0)
    total = (stack * agree).sum(0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def ties_merging(base: Any, models: Sequence[Any], density: float = 0.2, scale: float = 1.0,
                 weights: Sequence[float] | None = None, spec: WeightSpaceSpec | None = None):
    """``base + scale * merged``, where ``merged`` combines the task vectors ``theta_i - base``:

    1. trim: keep each task vector's top ``density`` fraction of entries by magnitude, per tensor
       (as LLM merging toolkits do);
    2. elect: per entry, the sign of the sum of the trimmed (``weights``-scaled) task vectors;
    3. disjoint merge: per entry, the mean over the task vectors whose sign agrees.
    """
    scale = require_finite("scale", scale)
    if not 0 <= density <= 1:               # also refuses NaN
        raise ValueError(f"density must be in [0, 1], got {density}")
    b, tvs, names, as_ws, spec = task_vectors(base, models, spec)
    w = merge_weights(weights, len(tvs))
    merged = {n: elect_and_merge([wi * trim(tv[n], density) for wi, tv in zip(w, tvs)]) for n in names}
    return hand_back(add_to_base(b, names, scale, merged), as_ws, spec)
