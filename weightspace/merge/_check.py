"""Several networks' weights, checked to share one architecture; results handed back in kind."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec


def _one(model: Any, what: str, spec: WeightSpaceSpec | None) -> dict[str, torch.Tensor]:
    if isinstance(model, torch.nn.Module):
        model = model.state_dict()
    if isinstance(model, WeightSpace):
        if spec is not None:
            spec.require_same(model.spec)
        if model.batch_size != 1:
            raise SpecError(f"{what} holds {model.batch_size} networks; pass one network per argument")
        return model.state_dict(0)
    if not isinstance(model, Mapping):
        raise SpecError(f"{what} must be a state dict, a one-network WeightSpace or a module, got {type(model).__name__}")
    if spec is not None:
        spec.check_state_dict(model, what=what)
    return {k: torch.as_tensor(v).detach() for k, v in model.items()}


def as_states(models: Sequence[Any] | WeightSpace, spec: WeightSpaceSpec | None = None,
              names: Sequence[str] | None = None) -> tuple[list[dict[str, torch.Tensor]], bool, WeightSpaceSpec | None]:
    """``(state dicts, inputs_were_weightspaces, spec)``. All networks must have the same entries
    with the same shapes: otherwise a :class:`SpecError` names the first entry that differs."""
    if isinstance(models, WeightSpace):
        return models.to_state_dicts(), True, models.spec
    models = list(models)
    if not models:
        raise SpecError("no networks given")
    as_ws = all(isinstance(m, WeightSpace) for m in models)
    if spec is None and as_ws:
        spec = models[0].spec
    names = names or [f"model #{i}" for i in range(len(models))]
    states = [_one(m, n, spec) for m, n in zip(models, names)]
    ref = states[0]
    for st, name in zip(states[1:], names[1:]):
        for k, v in ref.items():
            if k not in st:
                raise SpecError(f"{name} has no entry '{k}' that {names[0]} has: the architectures differ")
            if st[k].shape != v.shape:
                raise SpecError(f"entry '{k}' has shape {tuple(v.shape)} in {names[0]} and {tuple(st[k].shape)} "
                                f"in {name}: the architectures differ")
        extra = [k for k in st if k not in ref]
        if extra:
            raise SpecError(f"{name} has entry '{extra[0]}' that {names[0]} does not have: the architectures differ")
    return states, as_ws, spec


def mergeable(state: Mapping[str, torch.Tensor], spec: WeightSpaceSpec | None) -> list[str]:
    """Entries that merging combines: floating-point learned-on entries (all floating entries when
    no spec is known). Everything else (``num_batches_tracked``) is taken from the first network."""
    if spec is not None:
        return [n for n in spec.weight_names if state[n].is_floating_point()]
    return [n for n, v in state.items() if v.is_floating_point()]


def hand_back(state: dict[str, torch.Tensor], as_ws: bool, spec: WeightSpaceSpec | None):
    if as_ws and spec is not None:
        return WeightSpace(spec, {k: v.unsqueeze(0) for k, v in state.items()})
    return state
