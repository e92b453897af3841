"""Reductions and spatial ops: pooling, resampling, padding, flips, cumulative ops.

The diagonal symmetry kinds each reduction and pooling keeps are in :mod:`weightspace.spec.vocab`."""
from __future__ import annotations

from dataclasses import replace

import torch

from ...vocab import ALL, NONE, POOLING, REDUCTIONS
from .. import structure as S
from ..context import ATensor, Feat, OpKind, RuleContext, rule
from .util import arg, norm_dim, norm_dims


@rule(*REDUCTIONS)
def _reduce(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    name = ctx.opname
    n = x.value.dim()
    if name in ("max", "min") and args and isinstance(args[0], ATensor):
        from .binary import binary
        return binary(ctx, x, args[0], "maximum" if name == "max" else "minimum")
    key = "ord" if name in ("norm", "linalg_vector_norm", "vector_norm") else None
    if key:
        dim = arg(args, kwargs, 1, "dim")
        keepdim = arg(args, kwargs, 2, "keepdim", False)
    else:
        dim = arg(args, kwargs, 0, "dim")
        keepdim = arg(args, kwargs, 1, "keepdim", False)
        if name in ("std", "var", "std_mean", "var_mean") and isinstance(dim, bool):
            dim, keepdim = None, False
    dims = norm_dims(dim, n) if n else []
    labels = []
    for d in range(n):
        if d in dims:
            if keepdim:
                labels.append(None)
        else:
            labels.append(x.dims[d])
    mixes_features = any(isinstance(x.dims[d], Feat) for d in dims)
    held = None if mixes_features else x.held

    def make(v, indices=False):
        if not isinstance(v, torch.Tensor):
            return v
        labs = labels if v.dim() == len(labels) else [None] * v.dim()
        if indices:
            return ATensor(v, labs)
        return ATensor(v, labs, held=held, attn=x.attn if not mixes_features else None)

    if held is not None:
        ctx.restrict(held, REDUCTIONS[name])
        if name not in ("argmax", "argmin"):
            held.space.activations.append((held.start, held.start + held.length, name))
    out = ctx.out
    if isinstance(out, tuple):  # (values, indices) and friends
        return tuple(make(v, indices=i > 0 and name in ("max", "min", "median", "mode", "nanmedian"))
                     for i, v in enumerate(out))
    return make(out, indices=name in ("argmax", "argmin"))


def _spatial(ctx: RuleContext, x: ATensor, k: int, name: str, kinds) -> ATensor | tuple:
    n = x.value.dim()
    for d in range(n - k, n):
        ctx.fix(x.dims[d])
    out = ctx.out
    first = out[0] if isinstance(out, tuple) else out
    dims = list(x.dims[: n - k]) + [None] * k
    if x.held is None:
        y = ATensor(first, dims, attn=x.attn)
    else:
        y0 = ctx.elementwise(x, name, kinds)
        y = ATensor(first, RuleContext.remap(dims, x.held, y0.held.space) if y0.held.space is not x.held.space
                    else dims, held=y0.held)
    if isinstance(out, tuple):
        return (y,) + tuple(ATensor(v, dims) for v in out[1:])
    return y


def _pool_rule(name: str, k: int, kinds):
    def _r(ctx: RuleContext, x, *args, **kwargs):
        return _spatial(ctx, x, k, name, kinds)
    return _r


for _k in (1, 2, 3):
    for _base, _kinds in POOLING.items():
        rule(f"{_base}{_k}d")(_pool_rule(f"{_base}{_k}d", _k, _kinds))
        rule(f"{_base}{_k}d_with_indices")(_pool_rule(f"{_base}{_k}d", _k, _kinds))


for _k in (1, 2, 3):
    rule(f"max_unpool{_k}d")(_pool_rule(f"max_unpool{_k}d", _k, ALL))


@rule("interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "grid_sample")
def _interpolate(ctx: RuleContext, x, *args, **kwargs):
    return _spatial(ctx, x, x.value.dim() - 2, ctx.opname, ALL)


@rule("pad", "constant_pad_nd")
def _pad(ctx: RuleContext, x, pad, mode="constant", value=None):
    k = len(pad) // 2
    value = value or 0.0
    kinds = ALL if mode != "constant" or value == 0 else NONE
    return _spatial(ctx, x, k, "pad", kinds) if k else x.like(ctx.out)


@rule("pixel_shuffle")
def _pixel_shuffle(ctx: RuleContext, x, upscale_factor):
    """Blocks of r*r channels become one channel at r x r positions: a new site whose neurons are
    the blocks (block permutations survive; the order inside a block is pinned)."""
    r2 = upscale_factor ** 2
    c = x.value.dim() - 3
    dims = list(x.dims)
    dims[-2:] = [None, None]
    lab = x.dims[c]
    if not isinstance(lab, Feat):
        return ATensor(ctx.out, dims)
    if not lab.plain or not lab.space.is_site:
        ctx.fail("pixel_shuffle of split or flattened features")
    w = ctx.guard(S.split, ctx.resolve(lab), lab.length // r2, r2)
    if w.state == "wreath":
        S.fix(w.inner)
        var = w.outer
    else:
        var = S.fixed(lab.length // r2)
    ctx.break_diag(lab)
    site = ctx.new_site(lab.length // r2, var=var, diag=S.fixed(lab.length // r2))
    ctx.record(OpKind.REARRANGE, [lab], site, attrs={"op": "pixel_shuffle", "factor": upscale_factor})
    ctx.absorb(x)
    dims[c] = Feat(site, 0, site.size)
    return ATensor(ctx.out, dims, held=Feat(site, 0, site.size))


@rule("pixel_unshuffle")
def _pixel_unshuffle(ctx: RuleContext, x, downscale_factor):
    c = x.value.dim() - 3
    lab = x.dims[c]
    for d in (-2, -1):
        ctx.fix(x.dims[d])
    dims = list(x.dims)
    dims[-2:] = [None, None]
    if isinstance(lab, Feat):
        dims[c] = replace(lab, inner=lab.inner * downscale_factor ** 2)
    return ATensor(ctx.out, dims, held=x.held, attn=x.attn)


@rule("flip", "fliplr", "flipud", "roll", "rot90")
def _flip(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    n = x.value.dim()
    name = ctx.opname
    if name == "roll":
        dims = arg(args, kwargs, 1, "dims")
        touched = list(range(n)) if dims is None else norm_dims(dims, n)
    elif name == "fliplr":
        touched = [1]
    elif name == "flipud":
        touched = [0]
    elif name == "rot90":
        touched = norm_dims(arg(args, kwargs, 1, "dims", (0, 1)), n)
    else:
        touched = norm_dims(arg(args, kwargs, 0, "dims"), n)
    if any(isinstance(x.dims[d], Feat) for d in touched):
        ctx.fail(f"{name} along a hidden feature axis reorders neurons by position")
    dims = [None if d in touched else lab for d, lab in enumerate(x.dims)]
    return x.like(ctx.out, dims, param=None)


@rule("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp", "sort", "argsort", "topk", "kthvalue",
      "msort", "diff")
def _cumulative(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    n = x.value.dim()
    dim = arg(args, kwargs, 1 if ctx.opname in ("topk", "kthvalue") else 0, "dim", -1)
    d = norm_dim(dim if isinstance(dim, int) else -1, n)
    if isinstance(x.dims[d], Feat):
        ctx.fail(f"{ctx.opname} along a hidden feature axis depends on the neurons' order")
    dims = [None if k == d else lab for k, lab in enumerate(x.dims)]
    kinds = ALL if ctx.opname in ("cumsum", "diff") else NONE
    held = x.held
    if held is not None:
        ctx.restrict(held, kinds)
    out = ctx.out
    if isinstance(out, tuple):
        return tuple(ATensor(v, dims if v.dim() == n else [None] * v.dim(), held=held if i == 0 else None)
                     for i, v in enumerate(out))
    return ATensor(out, dims, held=held if ctx.opname not in ("argsort",) else None)


@rule("triu", "tril")
def _triangle(ctx: RuleContext, x, *args, **kwargs):
    if x.has_features and any(isinstance(d, Feat) for d in x.dims[-2:]):
        ctx.fail(f"{ctx.opname} over hidden feature axes")
    if x.held is not None:
        ctx.restrict(x.held, ALL)
    return x.like(ctx.out, param=None)
