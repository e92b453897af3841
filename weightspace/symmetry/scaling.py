"""Diagonal symmetries: positive rescaling (ReLU family) and sign flips (odd activations)."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ._params import apply_per_tensor, check_batch, require_mapping
from .plan import axis_factor, scale_along


def random_scaling(spec: WeightSpaceSpec, generator: torch.Generator | None = None, batch_size: int | None = None,
                   low: float = 0.5, high: float = 2.0) -> dict[str, torch.Tensor]:
    """Log-uniform positive factors in ``[low, high]`` for every scaling where positive rescaling holds."""
    lead = () if batch_size is None else (batch_size,)
    out = {}
    for s in spec.scalings:
        if s.positive:
            u = torch.rand(*lead, s.size, generator=generator, dtype=torch.float64)
            out[s.name] = torch.exp(torch.log(torch.tensor(low, dtype=torch.float64)) * (1 - u)
                                    + torch.log(torch.tensor(high, dtype=torch.float64)) * u)
    return out


def random_sign_flip(spec: WeightSpaceSpec, generator: torch.Generator | None = None,
                     batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Random +-1 per neuron for every scaling where sign flips hold (odd activations)."""
    lead = () if batch_size is None else (batch_size,)
    return {s.name: torch.randint(0, 2, (*lead, s.size), generator=generator).double() * 2 - 1
            for s in spec.scalings if s.sign}


def check_diagonal(spec: WeightSpaceSpec, values: Mapping[str, Any], kind: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, v in require_mapping(values, f"the {kind} values").items():
        s = spec.scaling(name)
        v = torch.as_tensor(v)
        if v.shape[-1] != s.size or v.dim() not in (1, 2):
            raise SpecError(f"{kind} for '{name}' has shape {tuple(v.shape)}, the scaling has {s.size} neurons")
        if kind == "scaling":
            if not s.positive:
                raise SpecError(f"positive rescaling is not a symmetry of '{name}' (its activation is not "
                                f"positively homogeneous)")
            if not bool((v > 0).all()):
                raise SpecError(f"scaling factors for '{name}' must be positive")
        else:
            if not s.sign:
                raise SpecError(f"sign flips are not a symmetry of '{name}' (its activation is not odd)")
            if not bool((v.abs() == 1).all()):
                raise SpecError(f"sign flips for '{name}' must be +1 or -1")
        out[name] = v
    return out


def apply_diagonal(params: Any, spec: WeightSpaceSpec, values: Mapping[str, torch.Tensor]):
    """Multiply each scaling's writers by ``values[s]`` and its readers by ``1 / values[s]``, unchecked
    (``values`` already validated; positive factors and signs may be multiplied together)."""
    per_net = any(v.dim() == 2 for v in values.values())

    def fn(name, t, lead):
        check_batch(values, lead, "scaling")
        for action in spec.scale_actions(name):
            f = axis_factor(action, values, t, lead[0] if per_net else None)
            if f is not None:
                t = scale_along(t, action.from_right, f)
        return t

    return apply_per_tensor(params, spec, fn)


def scale(params: Any, spec: WeightSpaceSpec, scales: Mapping[str, Any]):
    """Multiply each scaling's writers by ``s`` and its readers by ``1/s`` (``s > 0``)."""
    return apply_diagonal(params, spec, check_diagonal(spec, scales, "scaling"))


def flip_sign(params: Any, spec: WeightSpaceSpec, signs: Mapping[str, Any]):
    """Flip the sign of chosen neurons (``signs`` in {-1, +1}) where the activation is odd."""
    return apply_diagonal(params, spec, check_diagonal(spec, signs, "sign flip"))
