"""Small helpers shared by the rules."""
from __future__ import annotations

from typing import Any


def arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    """Argument ``i`` (positional) or ``name`` (keyword) of a call."""
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def norm_dim(d: int, n: int) -> int:
    return d + n if d < 0 else d


def norm_dims(dim: Any, n: int) -> list[int]:
    """``dim`` as a sorted list of non-negative dims; None means all."""
    if dim is None:
        return list(range(n))
    if isinstance(dim, int):
        return [norm_dim(dim, n)]
    return sorted(norm_dim(d, n) for d in dim)
