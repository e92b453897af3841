"""Tensors made inside forward: constants place no symmetry of their own on what they meet,
except where their values differ along an axis that meets features.

Random draws (``torch.randn``, ``Tensor.normal_``, dropout in training mode ...) are constants for
the one call the tracer sees; every op that draws is recorded (:meth:`RuleContext.random_draw`).
A module whose forward draws gives other outputs on every call, so no spec can be checked against
it: with ``check=True`` (the default) the trace stops at the first draw, naming its node, op and
module. With ``check=False`` a draw of a given shape is a fixed constant, a draw from features'
values (``bernoulli(p)``) an elementwise function of them (a symmetry in distribution), and dropout
is the identity, as in eval mode. The tracer records draws that see no traced value
(``torch.randn(h.shape)``) too (:mod:`..patches`).
"""
from __future__ import annotations

import torch

from ..context import NONE, ATensor, RuleContext, Uniform, rule
from .util import arg

UNIFORM = ("zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like", "empty_like",
           "new_zeros", "new_ones", "new_full", "new_empty", "scalar_tensor", "fill", "fill_", "zero_")
POSITIONAL = ("arange", "range", "linspace", "logspace", "eye", "tensor", "as_tensor", "from_numpy",
              "new_tensor", "tril_indices", "triu_indices", "ones_like_", "meshgrid", "polar", "complex",
              "bucketize", "searchsorted", "one_hot")
# ops that draw random numbers (in-place ``Tensor.normal_`` and friends resolve to the plain names)
RANDOM = ("rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "randperm", "normal",
          "bernoulli", "multinomial", "poisson", "uniform", "exponential", "cauchy", "log_normal", "geometric",
          "random", "binomial", "_standard_gamma", "_sample_dirichlet")
DROPOUT = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
           "feature_dropout")


@rule(*UNIFORM)
def _uniform(ctx: RuleContext, *args, **kwargs):
    out = ctx.out
    if not isinstance(out, torch.Tensor):
        return out
    return ATensor(out, [Uniform(n) for n in out.shape])


@rule(*RANDOM)
def _random(ctx: RuleContext, *args, **kwargs):
    """A fresh draw: a constant with no symmetry along any axis, unless it is drawn entry by entry
    from features' values (``bernoulli(p)``, ``normal(mean, std)``): then it is an elementwise
    function of them that keeps no scaling. ``randn_like(h)`` and in-place fills only borrow a shape."""
    ctx.random_draw()
    out = ctx.out
    if not isinstance(out, torch.Tensor):
        return _positional(ctx)
    feats = [a for a in list(args) + list(kwargs.values())
             if isinstance(a, ATensor) and (a.has_features or a.held is not None)]
    if ctx.inplace or ctx.opname.endswith("_like") or not feats:
        return ATensor(out, [None] * out.dim())
    if ctx.opname in ("multinomial", "randperm", "randint") or len(feats) > 1 or feats[0].shape != out.shape:
        ctx.fail(f"{ctx.opname} drawn from hidden features")
    x = feats[0]
    return ctx.elementwise(x, ctx.opname, NONE) if x.held is not None else x.like(out, param=None)


@rule(*DROPOUT)
def _dropout(ctx: RuleContext, x, *args, **kwargs):
    """The identity in eval mode, in which specs are traced; a random mask when called with
    ``training=True`` (``F.dropout`` defaults to it) and ``p > 0``."""
    name = ctx.opname.rstrip("_")
    p = arg(args, kwargs, 0, "p", 0.5)
    training = arg(args, kwargs, 1, "training", kwargs.get("train", "alpha" not in name))
    if training and p:
        ctx.random_draw()
    if not isinstance(x, ATensor):
        return ctx.out
    return x.like(ctx.out) if isinstance(ctx.out, torch.Tensor) else ctx.out


@rule("assigned")
def _assigned(ctx: RuleContext, x, key, value):
    """Item assignment ``x[key] = v`` (recorded out of place by the tracer): fine on constants and
    inputs, refused on anything that carries features, parameters or a site's values."""
    from ...errors import UnsupportedOpError
    from ..tracer import SETITEM_REFUSAL
    for t in (x, value):
        if isinstance(t, ATensor) and (t.has_features or t.held is not None or t.param is not None or t.attn):
            target = ctx.node.args[0]  # name the tensor written into, as the user wrote it
            raise UnsupportedOpError(getattr(target, "name", ctx.node.name),
                                     "item assignment x[...] = v (Tensor.__setitem__)", ctx.path or None,
                                     SETITEM_REFUSAL)
    return ATensor(ctx.out, [None] * ctx.out.dim())


@rule("stochastic_depth")
def _stochastic_depth(ctx: RuleContext, x, p=0.5, mode="row", training=True):
    """``torchvision.ops.stochastic_depth`` (EfficientNet, ConvNeXt, Swin): each sample's residual
    branch is kept (and rescaled) or dropped whole. The identity in eval mode, in which specs are
    traced; a random draw when training with ``p > 0``, and even then one factor per sample, which
    every neuron permutation commutes with."""
    if training and p:
        ctx.random_draw()
    if not isinstance(x, ATensor):
        return ctx.out
    return x.like(ctx.out) if isinstance(ctx.out, torch.Tensor) else ctx.out


@rule(*POSITIONAL)
def _positional(ctx: RuleContext, *args, **kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, ATensor) and (a.has_features or a.held is not None):
            ctx.fail(f"{ctx.opname} of hidden features")
    out = ctx.out
    if isinstance(out, (tuple, list)):
        return type(out)(ATensor(o, [None] * o.dim()) for o in out)
    return ATensor(out, [None] * out.dim()) if isinstance(out, torch.Tensor) else out
