"""Inputs of the alignment functions: one network's weights as a state dict or a WeightSpace."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..symmetry.plan import axis_index, permutation_plan


def as_state(params: Any, spec: WeightSpaceSpec, what: str) -> dict[str, torch.Tensor]:
    """A plain ``{name: Tensor[*shape]}`` for one network, checked against ``spec`` (the error names
    the first missing, extra or misshapen parameter)."""
    if isinstance(params, torch.nn.Module):
        params = params.state_dict()
    if isinstance(params, WeightSpace):
        spec.require_same(params.spec)
        if params.batch_size != 1:
            raise SpecError(f"{what} holds {params.batch_size} networks; pass one (e.g. ws[i])")
        return params.state_dict(0)
    if not isinstance(params, Mapping):
        raise SpecError(f"{what} must be a state dict, a one-network WeightSpace or a module, "
                        f"got {type(params).__name__}")
    spec.check_state_dict(params, what=what)
    return {k: torch.as_tensor(v).detach() for k, v in params.items()}


def like(original: Any, state: dict[str, torch.Tensor], spec: WeightSpaceSpec):
    """Hand back ``state`` as the same kind of object as ``original``."""
    if isinstance(original, WeightSpace):
        return WeightSpace(spec, {k: v.unsqueeze(0) for k, v in state.items()})
    return state


def permute_entries(state: dict[str, torch.Tensor], names, spec: WeightSpaceSpec, perms: dict[str, torch.Tensor],
                    out: dict[str, torch.Tensor]) -> None:
    """``out[name] = state[name]`` permuted by ``perms`` (unchecked, fast) for each of ``names``."""
    plans = permutation_plan(spec)
    for name in names:
        t = state[name]
        for plan in plans.get(name, ()):
            idx = axis_index(plan, perms, t.device, None)
            if idx is not None:
                t = t.index_select(plan.axis, idx)
        out[name] = t


def float_names(spec: WeightSpaceSpec, state: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """Learned-on entries with a floating dtype (what gets averaged / interpolated)."""
    return tuple(n for n in spec.weight_names if state[n].is_floating_point())
