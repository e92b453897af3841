"""Networks as the functions of weightspace take them, and results handed back in kind.

This is the one place that turns user inputs (a state dict, a one-network :class:`WeightSpace`, an
``nn.Module``, or a sequence of them / one WeightSpace batch) into checked plain state dicts
``{name: Tensor}``, and hands results back as the kind of object that came in. The alignment
(:mod:`weightspace.align`) and merging (:mod:`weightspace.merge`) functions use it, so they accept the
same inputs and fail with the same messages.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch

from .space import WeightSpace
from .spec.errors import SpecError
from .spec.spec import WeightSpaceSpec

__all__ = ["as_state", "as_states", "hand_back", "mergeable", "as_module"]


def as_state(network: Any, spec: WeightSpaceSpec | None, what: str, *,
             hint: str = "pass one (e.g. ws[i])") -> dict[str, torch.Tensor]:
    """A plain ``{name: Tensor[*shape]}`` for one network given as a state dict, a one-network
    WeightSpace or a module; checked against ``spec`` when given (the :class:`SpecError` names the
    first missing, extra or misshapen parameter). ``what`` names the argument in errors; ``hint``
    says what to do when a WeightSpace holds several networks."""
    if isinstance(network, torch.nn.Module):
        network = network.state_dict()
    if isinstance(network, WeightSpace):
        if spec is not None:
            spec.require_same(network.spec)
        if network.batch_size != 1:
            raise SpecError(f"{what} holds {network.batch_size} networks; {hint}")
        return network.state_dict(0)
    if not isinstance(network, Mapping):
        raise SpecError(f"{what} must be a state dict, a one-network WeightSpace or a module, "
                        f"got {type(network).__name__}")
    if spec is not None:
        spec.check_state_dict(network, what=what)
    return {k: torch.as_tensor(v).detach() for k, v in network.items()}


def as_states(networks: Sequence[Any] | WeightSpace, spec: WeightSpaceSpec | None = None,
              names: Sequence[str] | None = None) -> tuple[list[dict[str, torch.Tensor]], bool, WeightSpaceSpec | None]:
    """``(state dicts, inputs_were_weightspaces, spec)`` for several networks: a sequence of what
    :func:`as_state` takes, or one WeightSpace batch ``[N, ...]``. All networks must have the same
    entries with the same shapes: otherwise a :class:`SpecError` names the first entry that differs.
    ``spec`` defaults to the inputs' when they are all WeightSpaces; ``names`` name them in errors."""
    if isinstance(networks, WeightSpace):
        return networks.to_state_dicts(), True, networks.spec
    networks = list(networks)
    if not networks:
        raise SpecError("no networks given")
    as_ws = all(isinstance(m, WeightSpace) for m in networks)
    if spec is None and as_ws:
        spec = networks[0].spec
    names = names or [f"model #{i}" for i in range(len(networks))]
    states = [as_state(m, spec, n, hint="pass one network per argument") for m, n in zip(networks, names)]
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


def hand_back(state: dict[str, torch.Tensor], as_ws: bool, spec: WeightSpaceSpec | None):
    """``state`` as a one-network WeightSpace when the inputs were WeightSpaces (and a spec is
    known), else the state dict itself."""
    if as_ws and spec is not None:
        return WeightSpace(spec, {k: v.unsqueeze(0) for k, v in state.items()})
    return state


def mergeable(state: Mapping[str, torch.Tensor], spec: WeightSpaceSpec | None) -> list[str]:
    """Entries that averaging / interpolation combine: floating-point learned-on entries (all
    floating entries when no spec is known). Everything else (``num_batches_tracked``) is taken
    from the first network."""
    if spec is not None:
        return [n for n in spec.weight_names if state[n].is_floating_point()]
    return [n for n, v in state.items() if v.is_floating_point()]


def as_module(network: Any, template: torch.nn.Module | None, what: str) -> torch.nn.Module:
    """A module holding ``network``'s weights: ``network`` itself when it is a module, else a copy
    of ``template`` with the state dict (or one-network WeightSpace) loaded strictly: a mismatch
    names the parameter."""
    if isinstance(network, torch.nn.Module):
        return network
    if template is None:
        raise SpecError(f"{what} is a state dict; pass model=<a module of the same architecture> as well")
    m = copy.deepcopy(template)
    state = network.state_dict(0) if hasattr(network, "state_dict") and not isinstance(network, Mapping) else network
    try:
        m.load_state_dict(state)
    except RuntimeError as e:
        raise SpecError(f"{what} does not fit the model: {e}") from None
    return m
