"""Tracing a module into a :class:`~weightspace.WeightSpaceSpec`."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import UnsupportedOpError, require_module
from . import rules  # noqa: F401  (registers the built-in rules)
from .context import register_rule
from .extract import extract
from .interpret import interpret
from .state import TraceState
from .tracer import ConcreteTracer


RANDOM_DRAW_REASON = (
    "it draws random numbers in forward, so the module's outputs change from call to call and the "
    "traced spec cannot be checked against them. Pass the noise in as an input, draw it only in "
    "training mode (specs are traced in eval mode; F.dropout needs training=self.training), or pass "
    "check=False to trace each draw as a fixed constant")


def _as_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def trace_module(module: torch.nn.Module, example_inputs: Any, leaf_modules: tuple[type, ...] = (),
                 check: bool = True):
    require_module(module, "WeightSpaceSpec.from_module")
    inputs, kwargs = _as_inputs(example_inputs)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            tracer = ConcreteTracer(leaf_types=tuple(leaf_modules))
            graph = tracer.trace_concrete(module, inputs, kwargs)
            state = TraceState(module)
            interpret(graph, state)
            spec = extract(state, tracer.output_note)
        if check and state.random_draws:
            node, op, path = state.random_draws[0]
            raise UnsupportedOpError(node, op, path, RANDOM_DRAW_REASON)
        if check:
            from .selfcheck import self_check
            self_check(module, spec, inputs, kwargs)
    finally:
        module.train(was_training)
    return spec


__all__ = ["trace_module", "register_rule"]
