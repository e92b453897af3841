"""Weighted averaging of networks that share an architecture (model soups, MergeMany's last step)."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..inputs import as_states, hand_back, mergeable
from ..spec.spec import WeightSpaceSpec


def weighted_average(models: Sequence[Any], weights: Sequence[float] | None = None,
                     spec: WeightSpaceSpec | None = None):
    """``sum_i w_i * theta_i / sum_i w_i`` entrywise (equal weights by default). ``models``: state
    dicts, one-network WeightSpaces, or one WeightSpace batch ``[N, ...]``."""
    states, as_ws, spec = as_states(models, spec)
    w = torch.as_tensor([1.0] * len(states) if weights is None else weights, dtype=torch.float64)
    if w.shape != (len(states),):
        raise ValueError(f"{w.numel()} weights for {len(states)} networks")
    if float(w.sum()) == 0:
        raise ValueError("the weights sum to zero")
    w = w / w.sum()
    out = dict(states[0])
    for n in mergeable(states[0], spec):
        out[n] = sum(float(wi) * s[n].to(torch.float64) for wi, s in zip(w, states)).to(states[0][n].dtype)
    return hand_back(out, as_ws, spec)
