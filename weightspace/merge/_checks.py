"""What every merge function shares: finite scalar arguments, and the dtype it computes in.

Decision: a merge computes in one common floating dtype, ``float32`` or wider when an input is wider
(``float64``), whatever mix of float16 / bfloat16 / float32 / float64 the networks hold, and hands
back each entry in the dtype of the reference network (``a``, the first model, or ``base``): the
result has the checkpoints' own dtype, and half-precision inputs are not rounded at every step.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def require_finite(name: str, value: float) -> float:
    """``float(value)``, or ValueError naming the argument when it is NaN or infinite (a NaN
    interpolation weight or scale would turn every merged weight into NaN)."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def merge_weights(weights: Sequence[float] | None, count: int, what: str = "models") -> list[float]:
    """``weights`` as floats (all 1 when None), checked: one per network, each finite."""
    w = [1.0] * count if weights is None else [require_finite("each weight", x) for x in weights]
    if len(w) != count:
        raise ValueError(f"{len(w)} weights for {count} {what}")
    return w


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The floating dtype to compute a merge of ``tensors`` in: float32, or float64 when one is."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
