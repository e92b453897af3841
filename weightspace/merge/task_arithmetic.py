"""Task arithmetic (Ilharco et al., ICLR 2023): add scaled task vectors to a base model."""
from __future__ import annotations

from typing import Any, Sequence

from ..inputs import as_states, hand_back, mergeable
from ..spec.spec import WeightSpaceSpec
from ._checks import compute_dtype, merge_weights, require_finite


def task_vectors(base: Any, models: Sequence[Any], spec: WeightSpaceSpec | None = None):
    """``(base state, [theta_i - base], names, as_ws, spec)``: the fine-tunes' differences from the
    base, on the mergeable entries, in the dtype the merge computes in (float32, or float64 when an
    input is); :func:`add_to_base` hands the result back in the base's dtypes."""
    states, as_ws, spec = as_states([base, *models], spec, ["base"] + [f"model #{i}" for i in range(len(models))])
    if len(states) < 2:
        raise ValueError("no fine-tuned models given: task vectors need at least one besides the base")
    names = mergeable(states[0], spec)
    b = states[0]
    dtypes = {n: compute_dtype(*(s[n] for s in states)) for n in names}
    tvs = [{n: s[n].to(b[n].device, dtypes[n]) - b[n].to(dtypes[n]) for n in names} for s in states[1:]]
    return b, tvs, names, as_ws, spec


def add_to_base(base: dict, names, scale: float, merged: dict) -> dict:
    """``base + scale * merged[n]`` on ``names``, computed in ``merged``'s dtype and returned in the
    base's dtypes (other entries taken from the base)."""
    out = dict(base)
    for n in names:
        out[n] = (base[n].to(merged[n].dtype) + scale * merged[n]).to(base[n].dtype)
    return out


def task_arithmetic(base: Any, models: Sequence[Any], scale: float = 1.0, weights: Sequence[float] | None = None,
                    spec: WeightSpaceSpec | None = None):
    """``base + scale * sum_i w_i * (theta_i - base)`` (``w_i = 1`` by default). With
    ``scale = 1/N`` this is plain averaging of the fine-tunes; a negative weight subtracts a task
    ("forgetting"). ``models`` must share ``base``'s architecture (an error names the first
    differing entry)."""
    scale = require_finite("scale", scale)
    b, tvs, names, as_ws, spec = task_vectors(base, models, spec)
    w = merge_weights(weights, len(tvs))
    merged = {n: sum(wi * tv[n] for wi, tv in zip(w, tvs)) for n in names}
    return hand_back(add_to_base(b, names, scale, merged), as_ws, spec)
