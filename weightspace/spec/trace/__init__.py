"""Tracing a module into a :class:`~weightspace.WeightSpaceSpec`."""
from __future__ import annotations

from typing import Any

import torch

from . import rules  # noqa: F401  (registers the built-in rules)
from .context import register_rule
from .extract import extract
from .interpret import interpret
from .state import TraceState
from .tracer import ConcreteTracer


def _as_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def trace_module(module: torch.nn.Module, example_inputs: Any, leaf_modules: tuple[type, ...] = (),
                 check: bool = True):
    inputs, kwargs = _as_inputs(example_inputs)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            graph = ConcreteTracer(leaf_types=tuple(leaf_modules)).trace_concrete(module, inputs, kwargs)
            state = TraceState(module)
            interpret(graph, state)
            spec = extract(state)
        if check:
            from .selfcheck import self_check
            self_check(module, spec, inputs, kwargs)
    finally:
        module.train(was_training)
    return spec


__all__ = ["trace_module", "register_rule"]
