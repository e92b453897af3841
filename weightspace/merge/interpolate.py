"""Linear interpolation between two networks."""
from __future__ import annotations

from typing import Any

from ..inputs import as_states, hand_back, mergeable
from ..spec.spec import WeightSpaceSpec
from ._checks import compute_dtype, require_finite


def interpolate(a: Any, b: Any, alpha: float, spec: WeightSpaceSpec | None = None):
    """``(1 - alpha) * a + alpha * b`` on every floating-point learned-on entry (plain buffers from
    ``a``). ``a`` / ``b``: state dicts or one-network WeightSpaces (returned in kind); networks of
    different architectures raise an error naming the first differing entry. Computed in float32 (or
    float64 when an input is) and returned in ``a``'s dtypes; ``alpha`` must be finite."""
    alpha = require_finite("alpha", alpha)
    (sa, sb), as_ws, spec = as_states([a, b], spec, ["a", "b"])
    out = dict(sa)
    for n in mergeable(sa, spec):
        dtype = compute_dtype(sa[n], sb[n])
        out[n] = sa[n].to(dtype).lerp(sb[n].to(sa[n].device, dtype), alpha).to(sa[n].dtype)
    return hand_back(out, as_ws, spec)
