"""Small helpers shared by the rules."""
from __future__ import annotations

from typing import Any

from ..labels import ATensor


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


def is_zero(t: ATensor) -> bool:
    """Whether ``t`` is a constant with no nonzero entry: combining it with a site's values (added to
    them, or joined beside them as padding) keeps every diagonal symmetry of the site.

    An empty tensor is zero: it has no entry that a rescaling of the site could disagree with
    (concatenating it adds no positions; adding it broadcasts to an empty result). A parameter is
    never zero, whatever its current values: a symmetry must hold for every value it can take.
    """
    return t.param is None and bool((t.value == 0).all())
