"""Errors raised while building or using a weight-space spec."""
from __future__ import annotations

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
