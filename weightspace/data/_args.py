"""Argument checks shared by the data-making functions (``fit_inrs``, ``make_inr_zoo``, ``make_model_zoo``).

Decision: every count, size and rate is checked before any work or any write, and a bad one raises
:class:`weightspace.errors.UsageError` whose ``where`` is the parameter's name (``"limit"``,
``"num_models"``). The commands translate that name into their option (``--limit``, ``--num-models``),
so one rule serves the library and the command line. ``UsageError`` is a ``ValueError``.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path

from ..errors import UsageError


def count(name: str, value, low: int = 1, optional: bool = False):
    """``value`` as an int ``>= low`` (``None`` passes when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be an integer >= {low}, got {value!r}", name)
    if value < low:
        raise UsageError(f"{name} must be >= {low}, got {value}", name)
    return int(value)


def counts(name: str, values, low: int = 1) -> tuple[int, ...]:
    """A non-empty sequence of ints ``>= low`` (layer widths, training lengths)."""
    values = tuple(values) if not isinstance(values, (str, bytes)) and hasattr(values, "__iter__") else (values,)
    if not values:
        raise UsageError(f"{name} must list at least one value", name)
    return tuple(count(name, v, low) for v in values)


def real(name: str, value, *, positive: bool = False, low: float | None = None, below: float | None = None,
         optional: bool = False):
    """``value`` as a finite float; ``positive``: ``> 0``; ``low``: ``>= low``; ``below``: ``< below``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, got {value!r}", name)
    v = float(value)
    if not math.isfinite(v):
        raise UsageError(f"{name} must be a finite number, got {v}", name)
    if positive and v <= 0:
        raise UsageError(f"{name} must be > 0, got {v:g}", name)
    if low is not None and v < low:
        raise UsageError(f"{name} must be >= {low:g}, got {v:g}", name)
    if below is not None and v >= below:
        raise UsageError(f"{name} must be < {below:g}, got {v:g}", name)
    return v


def choice(name: str, value, options) -> str:
    if value not in options:
        raise UsageError(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}", name)
    return value


def out_folder(name: str, path) -> Path:
    """An output folder: it may exist (a zoo is resumed) but must not be a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file; the output must be a folder (new, or holding the zoo to resume)", name)
    return path
