"""Errors raised while building or using a weight-space spec."""
from __future__ import annotations

from typing import Any

MANUAL_SPEC_HINT = (
    "If the model is right and weightspace cannot reason about it, build the spec by hand with "
    "WeightSpaceSpec.from_axes({...}) (WeightSpaceSpec.mlp shows the form), or register a rule for "
    "the op with weightspace.spec.register_rule."
)


class SpecError(ValueError):
    """Input that does not match a spec (wrong names, shapes, permutation sizes)."""


class TraceError(RuntimeError):
    """The tracer met something it cannot turn into a spec."""


class UnsupportedOpError(TraceError):
    """An op whose effect on the symmetry the tracer cannot reason about.

    The message names the fx node, the op and the module it sits in.
    """

    def __init__(self, node: str, op: str, module: str | None, reason: str):
        self.node, self.op, self.module, self.reason = node, op, module, reason
        where = f" in module '{module}'" if module else ""
        super().__init__(f"cannot trace node '{node}' (op {op}){where}: {reason}. {MANUAL_SPEC_HINT}")


def require_module(module: Any, caller: str) -> None:
    """Functions that run or trace a network need an ``nn.Module`` instance; anything else (None, a
    function, the class itself, a state dict) is refused with a :class:`SpecError` naming ``caller``
    and what was given, before any attribute of it is touched."""
    import torch

    if isinstance(module, torch.nn.Module):
        return
    if isinstance(module, type):
        name = module.__name__
        got = (f"the class {name} itself (instantiate it: {name}(...))" if issubclass(module, torch.nn.Module)
               else f"the class {name}")
    elif callable(module):
        what = getattr(module, "__qualname__", None) or repr(module)
        got = f"the {type(module).__name__} {what} (wrap it in an nn.Module)"
    elif isinstance(module, dict):
        got = "a dict (a state dict? pass the module that holds it)"
    else:
        got = type(module).__name__
    raise SpecError(f"{caller} expects an nn.Module instance, got {got}")
