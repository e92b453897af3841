"""Views and rearrangements of one tensor: reshape, permute, transpose, expand, repeat, identity ops.

The reshape rule is the general one: dims are grouped by matching products of sizes, each group's
labels are merged into one index space and split again. Merging a feature axis with positions gives
a flattened label (``inner`` / ``outer``); splitting a feature axis into several dims gives a head
split (``path``), which later ops resolve into a head-structured group or pin to fixed blocks.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..context import ATensor, Feat, InputDim, RuleContext, Uniform, rule
from ..labels import _is_outer_of
from .util import arg, norm_dim


def reshape_labels(ctx: RuleContext, labels: list, in_shape, out_shape) -> list:
    ins = [(i, n) for i, n in enumerate(in_shape) if n != 1]
    outs = [(j, n) for j, n in enumerate(out_shape) if n != 1]
    result: list = [None] * len(out_shape)
    i = j = 0
    while i < len(ins) and j < len(outs):
        gi, gj = [ins[i]], [outs[j]]
        pi, pj = ins[i][1], outs[j][1]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                gi.append(ins[i])
                pi *= ins[i][1]
                i += 1
            else:
                gj.append(outs[j])
                pj *= outs[j][1]
                j += 1
        labs = [labels[k] for k, _ in gi]
        if len(gi) == 1 and len(gj) == 1:
            result[gj[0][0]] = labs[0]
            continue
        merged = merge_labels(ctx, labs, [n for _, n in gi])
        for (jj, _), lab in zip(gj, split_label(ctx, merged, [n for _, n in gj])):
            result[jj] = lab
    return result


def merge_labels(ctx: RuleContext, labs: list, sizes: list[int]):
    feats = [k for k, lab in enumerate(labs) if isinstance(lab, Feat)]
    total = math.prod(sizes)
    if not feats:
        inputs = [lab for lab in labs if isinstance(lab, InputDim)]
        if inputs:
            return InputDim(("merged",) + tuple(lab.key for lab in inputs), total)
        if all(isinstance(lab, Uniform) for lab in labs):
            return Uniform(total)
        return None
    k0, k1 = feats[0], feats[-1]
    outer, inner = math.prod(sizes[:k0]), math.prod(sizes[k1 + 1:])
    if len(feats) == 1:
        f = labs[k0]
        copies = inner > 1 and (f.inner == 1 or f.copies) and all(isinstance(lab, Uniform) for lab in labs[k1 + 1:])
        return replace(f, outer=f.outer * outer, inner=f.inner * inner, copies=copies)
    if len(feats) == 2 and k1 == k0 + 1 and _is_outer_of(labs[k0], labs[k1]) and labs[k1].inner == labs[k1].outer == 1:
        f = labs[k1]
        return Feat(f.space, f.start, f.length, f.path[:-1], inner=inner, outer=outer)
    if _axes_of_one_parameter(labs, feats):
        # a weight flattened across its axes (weight standardization: (out, in, kh, kw) -> (out, in*kh*kw)):
        # the first axis keeps its symmetry, each of its entries owning the following axes' entries,
        # which are pinned (kernel positions, as convolutions leave them)
        for k in feats[1:]:
            ctx.fix(labs[k])
        f = labs[k0]
        return replace(f, outer=f.outer * outer, inner=f.inner * math.prod(sizes[k0 + 1:]))
    ctx.fail("a reshape merges two different feature axes into one (as a channel shuffle does, or a "
             "weight flattened across its input and kernel axes); no permutation layout describes the result")


def _axes_of_one_parameter(labs: list, feats: list[int]) -> bool:
    """Consecutive whole axes of one raw parameter, in order."""
    fs = [labs[k] for k in feats]
    if feats != list(range(feats[0], feats[-1] + 1)) or not all(
            f.space.kind == "param" and f.plain and f.start == 0 and f.length == f.space.size for f in fs):
        return False
    return len({f.space.param for f in fs}) == 1 and [f.space.axis for f in fs] == list(
        range(fs[0].space.axis, fs[0].space.axis + len(fs)))


def split_label(ctx: RuleContext, f, sizes: list[int]) -> list:
    if f is None:
        return [None] * len(sizes)
    if isinstance(f, Uniform):
        return [Uniform(n) for n in sizes]
    if isinstance(f, InputDim):
        return [InputDim(f.key + (k,), n) for k, n in enumerate(sizes)]
    # the index space is outer x core x inner (mixed radix); locate the dims holding the core
    n_outer, n_core, n_inner = f.outer, f.core, f.inner
    left, k0 = 1, 0
    while left * sizes[k0] <= n_outer and not (left * sizes[k0] == n_outer and n_core == 1):
        left *= sizes[k0]
        k0 += 1
        if k0 == len(sizes):  # pragma: no cover - n_core >= 1 guarantees a core dim
            break
    right, k1 = 1, len(sizes) - 1
    while right * sizes[k1] <= n_inner and k1 > k0:
        right *= sizes[k1]
        k1 -= 1
    if n_outer % left or n_inner % right:
        ctx.fail("a reshape cuts through flattened feature blocks")
    base = Feat(f.space, f.start, f.length, f.path)
    labels: list = [None] * len(sizes)
    if k0 == k1:
        labels[k0] = replace(base, outer=n_outer // left, inner=n_inner // right,
                             copies=f.copies and n_inner // right > 1)
        return labels
    if left != n_outer or right != n_inner:
        ctx.fail("a reshape splits features and mixes them with other axes")
    middle = sizes[k0:k1 + 1]
    path, rest = f.path, n_core
    for j, n in enumerate(middle[:-1]):
        rest //= n
        labels[k0 + j] = Feat(f.space, f.start, f.length, path + (("o", n, rest),))
        path = path + (("i", n, rest),)
    labels[k1] = Feat(f.space, f.start, f.length, path)
    return labels


def still_raw(x: ATensor, dims: list) -> str | None:
    if x.param is None:
        return None
    ok = all(not isinstance(d, Feat) or d.space.kind != "param" or d.plain for d in dims)
    return x.param if ok else None


@rule("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as",
      "ravel", "atleast_1d", "atleast_2d", "atleast_3d")
def _reshape(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    dims = reshape_labels(ctx, x.dims, tuple(x.shape), tuple(ctx.out.shape))
    return x.like(ctx.out, dims, param=still_raw(x, dims))


@rule("permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "adjoint")
def _permute(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    n = x.value.dim()
    order = list(range(n))
    name = ctx.opname.rstrip("_")
    if name == "permute":
        perm = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args or kwargs.get("dims")
        order = [norm_dim(d, n) for d in perm]
    elif name in ("transpose", "swapaxes", "swapdims"):
        a = norm_dim(arg(args, kwargs, 0, "dim0"), n)
        b = norm_dim(arg(args, kwargs, 1, "dim1"), n)
        order[a], order[b] = order[b], order[a]
    elif name in ("t", "adjoint"):
        order = order[::-1] if n == 2 else order
        if name == "adjoint" and n >= 2:
            order = list(range(n - 2)) + [n - 1, n - 2]
    else:  # movedim
        src, dst = arg(args, kwargs, 0, "source"), arg(args, kwargs, 1, "destination")
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        src, dst = [norm_dim(d, n) for d in src], [norm_dim(d, n) for d in dst]
        rest = [d for d in range(n) if d not in src]
        order = [None] * n
        for s_, d_ in zip(src, dst):
            order[d_] = s_
        it = iter(rest)
        order = [o if o is not None else next(it) for o in order]
    return x.like(ctx.out, [x.dims[k] for k in order])


@rule("getattr")
def _getattr(ctx: RuleContext, x, name):
    if isinstance(x, (tuple, list)):
        return x[{"values": 0, "indices": 1}.get(name, 0)] if name in ("values", "indices") else ctx.out
    if not isinstance(x, ATensor):
        return ctx.out
    if name == "T":
        return x.like(ctx.out, x.dims[::-1])
    if name in ("mT", "mH", "H"):
        return x.like(ctx.out, x.dims[:-2] + [x.dims[-1], x.dims[-2]])
    if name == "data":
        return x.like(ctx.out)
    if x.has_features or x.held is not None:
        ctx.fail(f"tensor attribute '{name}' of hidden features")
    return ATensor(ctx.out, [None] * ctx.out.dim()) if isinstance(ctx.out, torch.Tensor) else ctx.out


@rule("expand", "expand_as", "broadcast_to")
def _expand(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    out = ctx.out.shape
    lead = len(out) - x.value.dim()
    dims = [Uniform(n) for n in out[:lead]]
    for d, lab in enumerate(x.dims):
        n_in, n_out = x.shape[d], out[lead + d]
        if n_in == 1:
            ctx.spread(lab, n_out)
        dims.append(Uniform(n_out) if n_in == 1 and n_out != 1 else lab)
    return x.like(ctx.out, dims, param=still_raw(x, dims))


@rule("repeat", "tile")
def _repeat(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    out = ctx.out.shape
    lead = len(out) - x.value.dim()
    dims: list = [None] * lead
    for d, lab in enumerate(x.dims):
        r = out[lead + d] // max(x.shape[d], 1)
        if r == 1:
            dims.append(lab)
        elif x.shape[d] == 1:
            ctx.spread(lab, out[lead + d])
            dims.append(Uniform(out[lead + d]))
        elif isinstance(lab, Feat):
            dims.append(replace(lab, outer=lab.outer * r))
        else:
            dims.append(Uniform(out[lead + d]) if isinstance(lab, Uniform) else None)
    return x.like(ctx.out, dims, param=None)


@rule("repeat_interleave")
def _repeat_interleave(ctx: RuleContext, x, repeats=None, dim=None, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    if dim is None or not isinstance(repeats, int):
        if x.has_features:
            ctx.fail("repeat_interleave with tensor repeats or no dim on hidden features")
        return ATensor(ctx.out, [None] * ctx.out.dim())
    d = norm_dim(dim, x.value.dim())
    dims = list(x.dims)
    lab = dims[d]
    dims[d] = (replace(lab, inner=lab.inner * repeats, copies=lab.inner == 1 or lab.copies)
               if isinstance(lab, Feat) else None)
    return x.like(ctx.out, dims, param=None)


@rule("contiguous", "clone", "detach", "to", "type", "float", "double", "half", "bfloat16", "cpu",
      "cuda", "requires_grad", "type_as", "positive", "identity", "resolve_conj", "resolve_neg",
      "pin_memory", "clone_", "detach_", "coalesce", "align_to")
def _identity(ctx: RuleContext, x, *args, **kwargs):
    """Value-preserving ops (dropout, the identity in eval mode, is in :mod:`.creation`)."""
    if not isinstance(x, ATensor):
        return ctx.out
    return x.like(ctx.out) if isinstance(ctx.out, torch.Tensor) else ctx.out
