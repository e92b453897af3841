"""Accept a state dict or a WeightSpace, and hand back the same kind."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec


def apply_per_tensor(params: Any, spec: WeightSpaceSpec, fn: Callable[[str, torch.Tensor, int | None], torch.Tensor]):
    """Call ``fn(name, tensor, batch)`` on each entry; ``batch`` is B for a WeightSpace, None for a
    single network's state dict (its tensors have no batch dim)."""
    from ..space import WeightSpace

    if isinstance(params, WeightSpace):
        params.spec.require_same(spec)
        b = params.batch_size
        return WeightSpace(params.spec, {n: fn(n, t, b) for n, t in params.tensors.items()})
    if isinstance(params, Mapping):
        spec.check_state_dict(params)
        out = type(params)() if isinstance(params, dict) else {}
        for n, t in params.items():
            out[n] = fn(n, t, None)
        return out
    raise SpecError(f"expected a state dict or a WeightSpace, got {type(params).__name__}")


def batch_of(values: Mapping[str, torch.Tensor], batch: int | None, what: str) -> None:
    for name, v in values.items():
        if v.dim() == 2:
            if batch is None:
                raise SpecError(f"{what} for '{name}' has a batch dim, but a single network was given")
            if v.shape[0] != batch:
                raise SpecError(f"{what} for '{name}' has batch {v.shape[0]}, the weights have {batch}")
