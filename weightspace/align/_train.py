"""Shuffled mini-batches and a default training loss for the learned matchings (STE, Sinkhorn)."""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..data.batches import iter_batches


def minibatches(data: Any, batch_size: int, generator: torch.Generator) -> Iterator[tuple[tuple, torch.Tensor]]:
    """One epoch of shuffled batches from an ``(x, y)`` pair of tensors, or the batches of an
    iterable as it yields them."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1]):
        x, y = data
        xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        order = torch.randperm(y.shape[0], generator=generator)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            yield tuple(t[idx] for t in xs), y[idx]
        return
    for inputs, y in iter_batches(data, batch_size):
        if y is None:
            raise ValueError("learning a matching on a task loss needs targets: pass data as (inputs, targets)")
        yield inputs, y


def mean_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer class targets, mean squared error otherwise."""
    if not target.is_floating_point():
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
    return F.mse_loss(output, target)
