"""Tensors made inside forward: constants place no symmetry of their own on what they meet,
except where their values differ along an axis that meets features."""
from __future__ import annotations

import torch

from ..context import ATensor, RuleContext, Uniform, rule

UNIFORM = ("zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like", "empty_like",
           "new_zeros", "new_ones", "new_full", "new_empty", "scalar_tensor", "fill", "fill_", "zero_")
POSITIONAL = ("arange", "range", "linspace", "logspace", "eye", "tensor", "as_tensor", "from_numpy",
              "rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "randperm", "new_tensor",
              "tril_indices", "triu_indices", "normal", "bernoulli", "multinomial", "ones_like_",
              "meshgrid", "polar", "complex", "bucketize", "searchsorted", "one_hot")


@rule(*UNIFORM)
def _uniform(ctx: RuleContext, *args, **kwargs):
    out = ctx.out
    if not isinstance(out, torch.Tensor):
        return out
    return ATensor(out, [Uniform(n) for n in out.shape])


@rule(*POSITIONAL)
def _positional(ctx: RuleContext, *args, **kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, ATensor) and (a.has_features or a.held is not None):
            if ctx.opname in ("rand_like", "randn_like", "randint_like", "bernoulli"):
                return ATensor(ctx.out, [None] * ctx.out.dim())
            ctx.fail(f"{ctx.opname} of hidden features")
    out = ctx.out
    if isinstance(out, (tuple, list)):
        return type(out)(ATensor(o, [None] * o.dim()) for o in out)
    return ATensor(out, [None] * out.dim()) if isinstance(out, torch.Tensor) else out
