"""What the group actions act on: a state dict, a WeightSpace, or features with any leading dims.

Every tensor is ``[*lead, *shape]`` where ``shape`` is the parameter's own shape from the spec:
``lead = ()`` for one network's state dict, ``(B,)`` for a WeightSpace, ``(B, C)`` for features
with channels. Actions index the parameter's axes from the right, so one rule serves all three.
An element given per network (``[B, size]``) lines up with the first leading dim.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec

# fn(name, tensor, lead) -> tensor; ``lead`` is the tuple of leading dims of the whole input
TensorFn = Callable[[str, torch.Tensor, tuple[int, ...]], torch.Tensor]


def _lead_of(spec: WeightSpaceSpec, tensors: Mapping[str, Any], what: str) -> tuple[int, ...]:
    lead: tuple[int, ...] | None = None
    for name, t in tensors.items():
        if name not in spec:
            raise SpecError(f"{what} has entry '{name}' that the spec does not know")
        shape = spec[name].shape
        t_shape = tuple(torch.as_tensor(t).shape)
        n = len(t_shape) - len(shape)
        if n < 0 or t_shape[n:] != shape:
            raise SpecError(f"{what} entry '{name}' has shape {t_shape}, the spec expects {shape} "
                            f"(optionally after leading dims such as [B] or [B, C])")
        if lead is None:
            lead = t_shape[:n]
        elif t_shape[:n] != lead:
            raise SpecError(f"{what} entry '{name}' has leading dims {list(t_shape[:n])}, earlier entries have "
                            f"{list(lead)}")
    for p in spec.params:
        if p.name not in tensors and p.in_weight_space:
            raise SpecError(f"{what} has no entry '{p.name}' (shape {tuple(p.shape)}) that the spec needs")
    return lead or ()


def require_mapping(values: Any, what: str) -> Mapping[str, Any]:
    """``values`` when it is a mapping ``{name: tensor}``, else a :class:`SpecError` saying what was
    expected (``None`` or a bare tensor would otherwise fail later with an AttributeError)."""
    if not isinstance(values, Mapping):
        raise SpecError(f"{what} must be a dict {{name: tensor}}, got {type(values).__name__}")
    return values


def apply_per_tensor(params: Any, spec: WeightSpaceSpec, fn: TensorFn):
    """Call ``fn(name, tensor, lead)`` on each entry and hand back the same kind of object.

    ``params``: a WeightSpace (``lead = (B,)``), an object with ``.spec`` and ``.tensors`` built as
    ``type(params)(spec, tensors)`` (features), or a mapping ``name -> Tensor[*lead, *shape]`` (a
    state dict; plain buffers such as ``num_batches_tracked`` may be left out)."""
    if hasattr(params, "spec") and hasattr(params, "tensors") and not isinstance(params, Mapping):
        params.spec.require_same(spec)
        lead = _lead_of(spec, params.tensors, type(params).__name__)
        return type(params)(params.spec, {n: fn(n, t, lead) for n, t in params.tensors.items()})
    if isinstance(params, Mapping):
        lead = _lead_of(spec, params, "state dict")
        out = type(params)() if isinstance(params, dict) else {}
        for n, t in params.items():
            out[n] = fn(n, torch.as_tensor(t), lead)
        return out
    raise SpecError(f"expected a state dict, a WeightSpace or weight-space features, got {type(params).__name__}")


def check_batch(values: Mapping[str, torch.Tensor], lead: tuple[int, ...], what: str) -> None:
    """An element given per network (``[B, size]``) needs weights with a first leading dim of B."""
    for name, v in values.items():
        if v.dim() == 2:
            if not lead:
                raise SpecError(f"{what} for '{name}' has a batch dim, but a single network was given")
            if v.shape[0] != lead[0]:
                raise SpecError(f"{what} for '{name}' has batch {v.shape[0]}, the weights have {lead[0]}")
