"""Walk a concretely traced graph, applying one rule per node."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.fx as fx
from torch.fx.node import map_aggregate

from . import structure as S
from .context import RuleContext, find_rule, iter_tensors, _function_names, RULES
from .labels import ATensor, Feat, InputDim, Uniform
from .state import TraceState


def interpret(graph: fx.Graph, state: TraceState, on_value: Callable[[ATensor], None] | None = None) -> None:
    """Apply the rule of every node; ``on_value`` sees each resulting traced tensor."""
    state.on_value = on_value
    env: dict[fx.Node, Any] = {}
    root = state.module
    for node in graph.nodes:
        if node.op == "placeholder":
            v = node.meta.get("val")
            env[node] = (ATensor(v, [InputDim((node.target, d), n) for d, n in enumerate(v.shape)])
                         if isinstance(v, torch.Tensor) else v)
        elif node.op == "get_attr":
            v = node.meta["val"]
            if isinstance(v, torch.Tensor):
                env[node] = (state.param_tensor(node.target, v) if state.is_state(node.target)
                             else ATensor(v, constant_labels(v)))
            else:
                env[node] = v
        elif node.op == "output":
            mark_outputs(state, map_aggregate(node.args[0], lambda a: env[a] if isinstance(a, fx.Node) else a))
        else:
            fn, name, inplace = find_rule(node, root)
            ctx = RuleContext(state, node, node.meta.get("val"), name, inplace)
            args = map_aggregate(node.args, lambda a: env[a] if isinstance(a, fx.Node) else a)
            kwargs = map_aggregate(node.kwargs, lambda a: env[a] if isinstance(a, fx.Node) else a)
            if node.op == "call_module" and fn is not None:
                args = (root.get_submodule(node.target),) + tuple(args)
            env[node] = _call(ctx, fn, args, kwargs)


def constant_labels(v: torch.Tensor) -> list:
    """A constant made in forward: along dims where it does not vary it demands nothing (Uniform)."""
    labels = []
    for d, n in enumerate(v.shape):
        uniform = n > 1 and v.numel() <= 1 << 20 and bool((v == v.narrow(d, 0, 1)).all())
        labels.append(Uniform(n) if uniform else None)
    return labels


def _call(ctx: RuleContext, fn: Callable | None, args, kwargs):
    result = fallback(ctx, args, kwargs) if fn is None else fn(ctx, *args, **kwargs)
    if args and isinstance(args[0], (list, tuple)) and ctx.opname in ("getitem", "getattr"):
        return result  # picking an element out of a Python container consumes nothing
    outs = iter_tensors(result)
    _settle(ctx, iter_tensors((args, kwargs)), outs)
    if ctx.state.on_value is not None:
        ctx.state.current_node = ctx.node                 # which fx node made the values (batched probes)
        for t in outs:
            ctx.state.on_value(t)
    return result


def run_rule(parent: RuleContext, fn: Callable, out: Any, args, kwargs):
    """A rule applied from inside another rule (composite rules)."""
    try:
        name = _function_names().get(fn) or getattr(fn, "__name__", str(fn))
    except TypeError:
        name = getattr(fn, "__name__", str(fn))
    if name not in RULES and name.endswith("_") and name[:-1] in RULES:
        name = name[:-1]
    rule = RULES.get(name)
    if rule is None:
        parent.fail(f"internal: no rule for {name} used by the rule for {parent.opname}")
    ctx = RuleContext(parent.state, parent.node, out, name, name=parent.name)
    ctx.path = parent.path
    ctx.name_hint = parent.pending_hint
    parent.pending_hint = None
    result = _call(ctx, rule, args, kwargs)
    parent.absorbed |= ctx.absorbed
    parent.accounted |= ctx.accounted
    return result


def _settle(ctx: RuleContext, inputs: list[ATensor], outputs: list[ATensor]) -> None:
    """Safety net: values consumed by a rule that did not account for their scaling lose it, and
    parameters used in a way no scaling action describes cannot be scaled."""
    out_held = [(o.held.space, o.held.start, o.held.length) for o in outputs if o.held is not None]
    out_params = {o.param for o in outputs if o.param is not None}
    for x in inputs:
        if x.held is not None and id(x) not in ctx.absorbed:
            h = (x.held.space, x.held.start, x.held.length)
            # a view of (part of) the same neurons passes their scaling through
            if not any(h[0] is s and h[1] < a + n and a < h[1] + h[2] for s, a, n in out_held):
                ctx.break_diag(x.held)
        if x.param is not None and x.param not in ctx.accounted and x.param not in out_params:
            ctx.state.unaccounted_params.add(x.param)


def fallback(ctx: RuleContext, args, kwargs):
    """No rule: fine for ops on inputs and constants only; an error on anything else."""
    tensors = iter_tensors((args, kwargs))
    custom = ctx.opname.endswith(".apply")
    for t in tensors:
        if custom and (t.has_features or t.held is not None):
            ctx.fail(f"custom autograd function {ctx.opname[:-6]} is a black box; register a rule for "
                     f"{ctx.opname} that says how it treats features")
        if t.has_features or t.held is not None or t.param is not None or t.attn is not None:
            what = "parameters" if (t.param is not None or not t.held) and t.has_features and \
                any(isinstance(d, Feat) and d.space.kind == "param" for d in t.dims) else "hidden features"
            ctx.fail(f"there is no rule for this op and it is applied to {what}")
    from_input = any(isinstance(d, InputDim) for t in tensors for d in t.dims)

    def wrap(v):
        if not isinstance(v, torch.Tensor):
            return v
        dims = [InputDim((ctx.node.name, d), n) if from_input else None for d, n in enumerate(v.shape)]
        return ATensor(v, dims)

    return map_aggregate(ctx.out, wrap) if not isinstance(ctx.out, torch.Tensor) else wrap(ctx.out)


def mark_outputs(state: TraceState, out: Any) -> None:
    """Output neurons cannot move and their values cannot be rescaled."""
    for t in iter_tensors(out):
        for d in t.dims:
            if isinstance(d, Feat) and d.space.is_site:
                try:
                    var = d.space.var_at(d.start, d.length)
                except S.StructureError:
                    var = d.space.var
                state.pins.append((list(S.leaves(var)), f"the output features of '{d.space.name}' "
                                   f"({d.length}) are fixed: a caller reads them by position", True))
            if isinstance(d, Feat):
                try:
                    S.fix(d.space.var_at(d.start, d.length))
                except S.StructureError:
                    S.fix(d.space.var)
                if d.space.is_site:
                    S.fix(d.space.diag_at(d.start, d.length))
        if t.held is not None:
            S.fix(t.held.space.var_at(t.held.start, t.held.length))
            S.fix(t.held.space.diag_at(t.held.start, t.held.length))
            if t.held.space.kind == "hidden":
                t.held.space.kind = "output"
        if t.param is not None:
            state.unaccounted_params.add(t.param)
