"""Weighted averaging of networks that share an architecture (model soups, MergeMany's last step)."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..inputs import as_states, hand_back, mergeable
from ..spec.spec import WeightSpaceSpec
from ._checks import merge_weights


def weighted_average(models: Sequence[Any], weights: Sequence[float] | None = None,
                     spec: WeightSpaceSpec | None = None):
    """``sum_i w_i * theta_i / sum_i w_i`` entrywise (equal weights by default). ``models``: state
    dicts, one-network WeightSpaces, or one WeightSpace batch ``[N, ...]``. Computed in float64, returned
    in the first network's dtypes; the weights must be finite and must not sum to zero."""
    states, as_ws, spec = as_states(models, spec)
    w = torch.as_tensor(merge_weights(weights, len(states), "networks"), dtype=torch.float64)
    if float(w.sum()) == 0:
        raise ValueError("the weights sum to zero")
    w = w / w.sum()
    out = dict(states[0])
    for n in mergeable(states[0], spec):
        ref = states[0][n]
        out[n] = sum(float(wi) * s[n].to(ref.device, torch.float64) for wi, s in zip(w, states)).to(ref.dtype)
    return hand_back(out, as_ws, spec)
