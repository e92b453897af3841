"""Specs that a module writes itself: the ``weight_space_spec()`` hook of ``WeightSpaceSpec.from_module``.

A module the tracer cannot read (soft trees, custom kernels) may define ``weight_space_spec()``
returning its spec, built with the spec's public constructors. ``from_module`` then returns that spec
instead of tracing, after the same self-check a traced spec passes, with the whole group: the spec
must match the module's state dict, and a random element of every kind the spec carries
(``random_element`` / ``act``) must leave the outputs on the example inputs unchanged.
"""
from __future__ import annotations

from typing import Any

import torch

from ..spec.errors import SpecError, TraceError
from ..spec.spec import WeightSpaceSpec


def _outputs(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _outputs(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _outputs(v)]
    return []


def spec_from_hook(module: torch.nn.Module, example_inputs: Any, check: bool = True,
                   tol: float = 1e-3) -> WeightSpaceSpec:
    """``module.weight_space_spec()``, checked against the module on ``example_inputs``."""
    from .element import act, random_element

    name = type(module).__name__
    spec = module.weight_space_spec()
    if not isinstance(spec, WeightSpaceSpec):
        raise SpecError(f"{name}.weight_space_spec() returned a {type(spec).__name__}, not a WeightSpaceSpec")
    spec.check_state_dict(module.state_dict(), what=f"{name}.weight_space_spec() checked against its state dict:")
    if not check:
        return spec
    if isinstance(example_inputs, dict):
        args, kwargs = (), dict(example_inputs)
    elif isinstance(example_inputs, (tuple, list)):
        args, kwargs = tuple(example_inputs), {}
    else:
        args, kwargs = (example_inputs,), {}
    original = {k: v.detach().clone() for k, v in module.state_dict().items()}
    moved = act(original, spec, random_element(spec, torch.Generator().manual_seed(1234), low=0.8, high=1.25))
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            before = _outputs(module(*args, **kwargs))
            module.load_state_dict(moved)
            after = _outputs(module(*args, **kwargs))
    finally:
        module.load_state_dict(original)
        module.train(was)
    for a, b in zip(before, after):
        if a.is_floating_point() and a.numel():
            err = float((a - b).abs().max() / (a.abs().max() + 1e-6))
            if not err <= tol:
                raise TraceError(f"{name}.weight_space_spec() does not describe the module: a random element of its "
                                 f"group changes the outputs by {err:.2e} (relative); fix the spec's groups or "
                                 f"symmetry records")
    return spec
