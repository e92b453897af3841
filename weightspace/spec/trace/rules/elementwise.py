"""Elementwise functions of one tensor (activations, clamps, powers, softmax, PReLU, GLU) and masking;
arithmetic between two tensors (residual joins, biases, gating) is in :mod:`.binary`.

An elementwise function of one tensor commutes with every permutation of its features; what it
decides is which diagonal symmetries survive: ``f(s*x) = s*f(x)`` for ``s > 0`` (positively
homogeneous: ReLU, leaky ReLU, max) or for ``s = -1`` (odd: tanh, sin) or both (identity, linear).
The kinds of every named function, and the labels recorded in ``Site.activations``, are those of
:mod:`weightspace.spec.vocab`; arithmetic with constants decides them in :mod:`.binary`.
"""
from __future__ import annotations

import math

import torch

from ...vocab import ELEMENTWISE, activation_label
from ..context import ALL, NONE, ATensor, Feat, OpKind, RuleContext, rule
from .binary import binary, broadcast, relabel
from .util import arg


def _activation_rule(name: str, kinds):
    def _rule(ctx: RuleContext, x, *args, **kwargs):
        if not isinstance(x, ATensor):
            return ctx.out
        if x.held is None:
            return x.like(ctx.out, param=None)
        return ctx.elementwise(x, name, kinds)
    return _rule


# one generic rule per elementwise function of the vocabulary that has no rule of its own
for _fn in ELEMENTWISE.values():
    if _fn.generic:
        rule(_fn.name)(_activation_rule(_fn.name, _fn.kinds))


def _kinds(name: str):
    """The diagonal symmetry kinds a known elementwise function keeps (none for unknown ones)."""
    fn = ELEMENTWISE.get(name)
    return fn.kinds if fn is not None else NONE


@rule("hardtanh", "clamp", "clip", "clamp_min", "clamp_max", "threshold")
def _clamp(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    name = ctx.opname.rstrip("_")
    if name == "hardtanh":
        lo, hi = arg(args, kwargs, 0, "min_val", -1.0), arg(args, kwargs, 1, "max_val", 1.0)
    elif name == "threshold":
        th, val = arg(args, kwargs, 0, "threshold"), arg(args, kwargs, 1, "value")
        lo, hi = (0.0, None) if th == 0 and val == 0 else (math.nan, math.nan)
    elif name == "clamp_min":
        lo, hi = arg(args, kwargs, 0, "min"), None
    elif name == "clamp_max":
        lo, hi = None, arg(args, kwargs, 0, "max")
    else:
        lo, hi = arg(args, kwargs, 0, "min"), arg(args, kwargs, 1, "max")
    if isinstance(lo, ATensor) or isinstance(hi, ATensor):
        return _tensor_bounds(ctx, x, lo, hi)
    if lo == 0 and hi is None:
        kinds, label = _kinds("relu"), activation_label("relu")
    elif lo is not None and hi is not None and lo == -hi:
        kinds, label = _kinds("hardtanh"), activation_label("hardtanh", f"{hi:g}")
    else:
        kinds, label = _kinds("clamp"), activation_label("clamp", f"{lo},{hi}")
    if x.held is None:
        return x.like(ctx.out, param=None)
    return ctx.elementwise(x, label, kinds)


def _tensor_bounds(ctx: RuleContext, x: ATensor, lo, hi) -> ATensor:
    """``clamp(x, lo, hi)`` with a tensor bound is ``minimum(maximum(x, lo), hi)``: binary ops, so
    each bound's dims are aligned with (and broadcast against) ``x``'s like any other operand's,
    instead of being ignored (which let a permutation move a bound against the values it clamps)."""
    y = x
    for bound, fn, fn_scalar in ((lo, torch.maximum, torch.clamp_min), (hi, torch.minimum, torch.clamp_max)):
        if isinstance(bound, ATensor):
            if bound.value.dtype != y.value.dtype:
                ctx.fail("a clamp bound of another dtype than the clamped tensor")
            y = ctx.apply(fn, y, bound)
        elif bound is not None:
            y = ctx.apply(fn_scalar, y, bound)
    return y.like(ctx.out)


@rule("pow", "float_power")
def _pow(ctx: RuleContext, x, exponent=None, *args, **kwargs):
    if isinstance(x, ATensor) and not isinstance(exponent, ATensor):
        if x.held is None:
            return x.like(ctx.out, param=None)
        return ctx.elementwise(x, activation_label("pow", str(exponent)), ALL if exponent == 1 else NONE)
    return binary(ctx, x, exponent, "pow")


@rule("softmax", "log_softmax", "softmin", "_softmax")
def _softmax(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    if x.held is None:
        return x.like(ctx.out, param=None)
    return ctx.elementwise(x, ctx.opname, _kinds(ctx.opname))


@rule("normalize")
def _normalize(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    if x.held is None:
        return x.like(ctx.out, param=None)
    return ctx.elementwise(x, "normalize", _kinds("normalize"))


@rule("prelu")
def _prelu(ctx: RuleContext, x, weight):
    if x.held is None:
        if x.has_features:
            ctx.fail("prelu on features that are not a site's values")
        return x.like(ctx.out, param=None)
    site = ctx.site_like(x.held, diag=ctx.diag(x.held))
    ctx.restrict(x.held, _kinds("prelu"))
    roles = ["fixed"] * weight.value.dim()
    if weight.value.numel() > 1:
        cdim = 1 if x.value.dim() > 1 else 0
        ctx.unify(weight.dims[0], x.dims[cdim])
        roles[0] = "neuron"
    ctx.record(OpKind.AFFINE, [x.held], site, [ctx.use("weight", weight, roles)], {"op": "prelu"})
    site.activations.append((0, site.size, activation_label("prelu")))
    ctx.absorb(x)
    return x.like(ctx.out, ctx.remap(x.dims, x.held, site), held=Feat(site, 0, site.size), param=None)


@rule("glu")
def _glu(ctx: RuleContext, x, dim=-1):
    a, b = ctx.apply(torch.chunk, x, 2, dim)
    return _with_value(ctx.apply(torch.mul, a, ctx.apply(torch.sigmoid, b)), ctx.out)


def _with_value(t: ATensor, value) -> ATensor:
    return t.like(value)


# ------------------------------------------------------------------------------------ masking


@rule("masked_fill", "masked_scatter")
def _masked_fill(ctx: RuleContext, x, mask, value=0.0):
    if not isinstance(x, ATensor):
        return ctx.out
    if isinstance(mask, ATensor):
        pairs, _, _ = broadcast(ctx, x, mask)
        ctx.unify_aligned(pairs)
    if x.held is None:
        return x.like(ctx.out, param=None)
    return ctx.elementwise(x, "masked_fill", NONE)


@rule("where")
def _where(ctx: RuleContext, cond, a=None, b=None):
    if a is None:
        return ATensor(ctx.out, [None] * ctx.out.dim()) if isinstance(ctx.out, torch.Tensor) else ctx.out
    ts = [t for t in (a, b) if isinstance(t, ATensor)]
    holders = [t for t in ts if t.held is not None]
    if len(holders) > 1 and not all(h.held == holders[0].held for h in holders):
        ctx.fail("torch.where choosing between two different hidden activations")
    base = holders[0] if holders else (ts[0] if ts else None)
    if base is None:
        return ATensor(ctx.out, [None] * ctx.out.dim())
    nd = ctx.out.dim()
    for t in ts + ([cond] if isinstance(cond, ATensor) else []):
        if t is not base:
            pairs, _, _ = broadcast(ctx, base, t)
            ctx.unify_aligned(pairs)
    dims = [None] * (nd - base.value.dim()) + list(base.dims)
    if base.held is None:
        return ATensor(ctx.out, dims, attn=base.attn)
    y = ctx.elementwise(base, "where", NONE)
    return ATensor(ctx.out, relabel(dims, base, y), held=y.held)


@rule("eq", "ne", "lt", "le", "gt", "ge", "greater", "less", "greater_equal", "less_equal", "not_equal",
      "logical_and", "logical_or", "logical_not", "logical_xor", "isnan", "isinf", "isfinite",
      "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "signbit", "isclose", "equal", "allclose",
      "_assert", "_assert_is_none", "_assert_async")
def _compare(ctx: RuleContext, *args, **kwargs):
    ts = [t for t in list(args) + list(kwargs.values()) if isinstance(t, ATensor)]
    if not isinstance(ctx.out, torch.Tensor) or not ts:
        return ctx.out
    base = max(ts, key=lambda t: t.value.dim())
    for t in ts:
        if t is not base:
            pairs, _, _ = broadcast(ctx, base, t)
            ctx.unify_aligned(pairs)
    nd = ctx.out.dim()
    return ATensor(ctx.out, [None] * (nd - base.value.dim()) + list(base.dims))
