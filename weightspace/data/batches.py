"""Data arguments of the functions that run networks (alignment, REPAIR, BatchNorm reset, barrier
curves): a tensor of inputs, an ``(inputs, targets)`` pair, or an iterable of batches; and a module
run on given weights."""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch

from ..spec.errors import SpecError

__all__ = ["iter_batches", "functional_forward"]


def iter_batches(data: Any, batch_size: int | None = None) -> Iterator[tuple[tuple, torch.Tensor | None]]:
    """Yield ``(inputs, targets)`` with ``inputs`` a tuple of positional model inputs and ``targets``
    a tensor or None.

    ``data`` may be a tensor ``[N, ...]`` (inputs only), a pair ``(x, y)`` of tensors (or
    ``((x1, x2), y)`` for several inputs), or an iterable of such batches (a DataLoader).
    Tensors are cut into chunks of ``batch_size`` (all at once when None).
    """
    if torch.is_tensor(data) or (isinstance(data, (tuple, list)) and len(data) == 2
                                 and (torch.is_tensor(data[0]) or isinstance(data[0], (tuple, list)))
                                 and (data[1] is None or torch.is_tensor(data[1]))):
        x, y = (data, None) if torch.is_tensor(data) else data
        xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        n = xs[0].shape[0]
        step = batch_size or n
        for s in range(0, n, step):
            yield tuple(t[s:s + step] for t in xs), (None if y is None else y[s:s + step])
        return
    if isinstance(data, Mapping) or not hasattr(data, "__iter__"):
        raise SpecError(f"data must be a tensor of inputs, an (inputs, targets) pair or an iterable of "
                        f"batches, got {type(data).__name__}")
    for batch in data:
        yield from iter_batches(batch, None)


def functional_forward(module: torch.nn.Module, state: Mapping[str, torch.Tensor], inputs: tuple) -> torch.Tensor:
    """``module(*inputs)`` computed with the weights in ``state`` (the module itself is untouched)."""
    out = torch.func.functional_call(module, dict(state), inputs, strict=False)
    return out[0] if isinstance(out, (tuple, list)) else out
