"""Task arithmetic (Ilharco et al., ICLR 2023): add scaled task vectors to a base model."""
from __future__ import annotations

from typing import Any, Sequence

from ..inputs import as_states, hand_back, mergeable
from ..spec.spec import WeightSpaceSpec


def task_vectors(base: Any, models: Sequence[Any], spec: WeightSpaceSpec | None = None):
    """``(base state, [theta_i - base], names, as_ws, spec)``: the fine-tunes' differences from the
    base, on the mergeable entries."""
    states, as_ws, spec = as_states([base, *models], spec, ["base"] + [f"model #{i}" for i in range(len(models))])
    names = mergeable(states[0], spec)
    return states[0], [{n: s[n] - states[0][n] for n in names} for s in states[1:]], names, as_ws, spec


def task_arithmetic(base: Any, models: Sequence[Any], scale: float = 1.0, weights: Sequence[float] | None = None,
                    spec: WeightSpaceSpec | None = None):
    """``base + scale * sum_i w_i * (theta_i - base)`` (``w_i = 1`` by default). With
    ``scale = 1/N`` this is plain averaging of the fine-tunes; a negative weight subtracts a task
    ("forgetting"). ``models`` must share ``base``'s architecture (an error names the first
    differing entry)."""
    b, tvs, names, as_ws, spec = task_vectors(base, models, spec)
    w = [1.0] * len(tvs) if weights is None else [float(x) for x in weights]
    if len(w) != len(tvs):
        raise ValueError(f"{len(w)} weights for {len(tvs)} models")
    out = dict(b)
    for n in names:
        out[n] = b[n] + scale * sum(wi * tv[n] for wi, tv in zip(w, tvs))
    return hand_back(out, as_ws, spec)
