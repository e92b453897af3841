"""Views and rearrangements: reshape, permute, indexing, split, concatenation, stacking.

The reshape rule is the general one: dims are grouped by matching products of sizes, each group's
labels are merged into one index space and split again. Merging a feature axis with positions gives
a flattened label (``inner`` / ``outer``); splitting a feature axis into several dims gives a head
split (``path``), which later ops resolve into a head-structured group or pin to fixed blocks.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from .. import structure as S
from ..context import ALL, NONE, ATensor, Feat, InputDim, RuleContext, Uniform, rule
from ..labels import _is_outer_of
from .util import arg, norm_dim, norm_dims


# ------------------------------------------------------------------------------------ reshape


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
    feats = [k for k, l in enumerate(labs) if isinstance(l, Feat)]
    total = math.prod(sizes)
    if not feats:
        inputs = [l for l in labs if isinstance(l, InputDim)]
        if inputs:
            return InputDim(("merged",) + tuple(l.key for l in inputs), total)
        if all(isinstance(l, Uniform) for l in labs):
            return Uniform(total)
        return None
    k0, k1 = feats[0], feats[-1]
    outer, inner = math.prod(sizes[:k0]), math.prod(sizes[k1 + 1:])
    if len(feats) == 1:
        f = labs[k0]
        return replace(f, outer=f.outer * outer, inner=f.inner * inner)
    if len(feats) == 2 and k1 == k0 + 1 and _is_outer_of(labs[k0], labs[k1]) and labs[k1].inner == labs[k1].outer == 1:
        f = labs[k1]
        return Feat(f.space, f.start, f.length, f.path[:-1], inner=inner, outer=outer)
    ctx.fail("a reshape merges two different feature axes into one")


def split_label(ctx: RuleContext, f, sizes: list[int]) -> list:
    if f is None:
        return [None] * len(sizes)
    if isinstance(f, Uniform):
        return [Uniform(n) for n in sizes]
    if isinstance(f, InputDim):
        return [InputDim(f.key + (k,), n) for k, n in enumerate(sizes)]
    # the index space is outer x core x inner (mixed radix); locate the dims holding the core
    O, C, I = f.outer, f.core, f.inner
    left, k0 = 1, 0
    while left * sizes[k0] <= O and not (left * sizes[k0] == O and C == 1):
        left *= sizes[k0]
        k0 += 1
        if k0 == len(sizes):  # pragma: no cover - C >= 1 guarantees a core dim
            break
    right, k1 = 1, len(sizes) - 1
    while right * sizes[k1] <= I and k1 > k0:
        right *= sizes[k1]
        k1 -= 1
    if O % left or I % right:
        ctx.fail("a reshape cuts through flattened feature blocks")
    base = Feat(f.space, f.start, f.length, f.path)
    labels: list = [None] * len(sizes)
    if k0 == k1:
        labels[k0] = replace(base, outer=O // left, inner=I // right)
        return labels
    if left != O or right != I:
        ctx.fail("a reshape splits features and mixes them with other axes")
    middle = sizes[k0:k1 + 1]
    path, rest = f.path, C
    for j, n in enumerate(middle[:-1]):
        rest //= n
        labels[k0 + j] = Feat(f.space, f.start, f.length, path + (("o", n, rest),))
        path = path + (("i", n, rest),)
    labels[k1] = Feat(f.space, f.start, f.length, path)
    return labels


def _still_raw(x: ATensor, dims: list) -> str | None:
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
    return x.like(ctx.out, dims, param=_still_raw(x, dims))


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
        dims.append(Uniform(n_out) if n_in == 1 and n_out != 1 else lab)
    return x.like(ctx.out, dims, param=_still_raw(x, dims))


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
    dims[d] = replace(lab, inner=lab.inner * repeats) if isinstance(lab, Feat) else None
    return x.like(ctx.out, dims, param=None)


@rule("contiguous", "clone", "detach", "to", "type", "float", "double", "half", "bfloat16", "cpu",
      "cuda", "requires_grad", "type_as", "positive", "identity", "resolve_conj", "resolve_neg",
      "pin_memory", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
      "feature_alpha_dropout", "feature_dropout", "clone_", "detach_", "coalesce", "align_to")
def _identity(ctx: RuleContext, x, *args, **kwargs):
    """Value-preserving ops (dropout is the identity in eval mode, in which specs are traced)."""
    if not isinstance(x, ATensor):
        return ctx.out
    return x.like(ctx.out) if isinstance(ctx.out, torch.Tensor) else ctx.out


# ------------------------------------------------------------------------------------ indexing


def _expand_index(idx, ndim: int) -> list:
    idx = list(idx) if isinstance(idx, tuple) else [idx]
    used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out = []
    for i in idx:
        if i is Ellipsis:
            out.extend([slice(None)] * (ndim - used))
        else:
            out.append(i)
    used_now = sum(1 for i in out if i is not None)
    out.extend([slice(None)] * (ndim - used_now))
    return out


class _Indexer:
    """Applies integer selections and slices to one tensor's labels."""

    def __init__(self, ctx: RuleContext, x: ATensor):
        self.ctx, self.x = ctx, x
        self.dims = list(x.dims)
        self.held = x.held
        self.pinned = dict(x.meta.get("pinned", {}))
        self.keep = [True] * len(self.dims)

    def select(self, d: int, k: int) -> None:
        ctx, lab = self.ctx, self.dims[d]
        self.keep[d] = False
        if not isinstance(lab, Feat):
            return
        if lab.path:
            step, a, b = lab.path[-1]
            if step != "o" or len(lab.path) != 1 or lab.inner != 1 or lab.outer != 1:
                ctx.fail("selecting inside a head or a nested head split")
            ctx.guard(S.fibre, lab.space.var_at(lab.start, lab.length), k, b)
            start = lab.start + k * b
            for e, other in enumerate(self.dims):
                if isinstance(other, Feat) and other.space is lab.space and other.start == lab.start and \
                        other.length == lab.length and other.path[:1] == (("i", a, b),):
                    self.dims[e] = Feat(lab.space, start, b, other.path[1:], other.inner, other.outer)
            if self.held is not None and self.held.space is lab.space:
                self.held = Feat(lab.space, start, b)
            return
        entry = lab.start + (k // lab.inner) % lab.core
        if lab.space.kind == "param" and self.x.param is not None:
            self.pinned[lab.space.axis] = entry
        ctx.guard(lambda: S.fix(lab.space.var_at(entry, 1)))
        if self.held is not None and self.held.space is lab.space:
            self.held = Feat(lab.space, entry, 1)

    def slice(self, d: int, sl: slice) -> None:
        ctx, lab = self.ctx, self.dims[d]
        size = self.x.shape[d]
        start, stop, step = sl.indices(size)
        n = len(range(start, stop, step))
        if (start, stop, step) == (0, size, 1):
            return
        if not isinstance(lab, Feat):
            self.dims[d] = (Uniform(n) if isinstance(lab, Uniform) else
                            InputDim(lab.key + ("slice", start, stop, step), n) if isinstance(lab, InputDim) else None)
            return
        if not lab.plain:
            ctx.fail("slicing a split or flattened feature axis")
        if step == 1:
            self.dims[d] = Feat(lab.space, lab.start + start, n)
        elif start < step and lab.length % step == 0 and n == lab.length // step:
            # every step-th feature: blocks of `step` whose within-block order is pinned
            w = ctx.guard(S.split, lab.space.var_at(lab.start, lab.length), lab.length // step, step)
            if w.state == "wreath":
                ctx.guard(lambda: S.fix(S.make_shared(w)))
            self.dims[d] = Feat(lab.space, lab.start, lab.length, (("o", lab.length // step, step),))
            if self.held is not None and self.held.space is lab.space:
                self.held = None  # the values are a strided subset: no longer one contiguous stretch
            return
        else:
            ctx.fail("a strided slice of hidden features")
        if self.held is not None and self.held.space is lab.space:
            self.held = Feat(lab.space, lab.start + start, n)

    def result(self, value: torch.Tensor, extra: list | None = None) -> ATensor:
        dims = extra if extra is not None else [l for l, k in zip(self.dims, self.keep) if k]
        x = self.x
        param = _still_raw(x, dims)
        t = ATensor(value, dims, held=self.held, param=param, attn=x.attn)
        if param is not None and self.pinned:
            t.meta["pinned"] = self.pinned
        return t


@rule("getitem")
def _getitem(ctx: RuleContext, x, idx):
    if isinstance(x, (list, tuple)):
        return x[idx]
    if not isinstance(x, ATensor):
        return ctx.out
    items = _expand_index(idx, x.value.dim())
    ix = _Indexer(ctx, x)
    dims_out: list = []
    d = 0
    advanced = False
    for it in items:
        if it is None:
            dims_out.append(("new",))
            continue
        if isinstance(it, ATensor) or isinstance(it, torch.Tensor) or isinstance(it, (list,)):
            advanced = True
            lab = x.dims[d]
            if isinstance(lab, Feat):
                ctx.fail("indexing hidden features with a tensor")
            ix.keep[d] = False
            dims_out.append(("adv",))
            d += 1
            continue
        if isinstance(it, bool):
            ctx.fail("boolean scalar index")
        if isinstance(it, int):
            ix.select(d, it if it >= 0 else it + x.shape[d])
        else:
            ix.slice(d, it)
            dims_out.append(("dim", d))
        d += 1
    if advanced:
        # numpy rule: adjacent advanced indices put their result dims in place, others in front
        adv = [i for i, e in enumerate(dims_out) if e[0] == "adv"]
        n_adv = ctx.out.dim() - sum(1 for e in dims_out if e[0] != "adv")
        adjacent = adv == list(range(adv[0], adv[-1] + 1))
        labels: list = [] if adjacent else [None] * n_adv
        for i, e in enumerate(dims_out):
            if e[0] == "adv":
                if adjacent and i == adv[0]:
                    labels.extend([None] * n_adv)
            else:
                labels.append(None if e[0] == "new" else ix.dims[e[1]])
        return ix.result(ctx.out, labels)
    labels = [None if e[0] == "new" else ix.dims[e[1]] for e in dims_out]
    return ix.result(ctx.out, labels)


@rule("select")
def _select(ctx: RuleContext, x, dim, index):
    if not isinstance(x, ATensor):
        return ctx.out
    d = norm_dim(dim, x.value.dim())
    ix = _Indexer(ctx, x)
    ix.select(d, index if index >= 0 else index + x.shape[d])
    return ix.result(ctx.out)


@rule("narrow")
def _narrow(ctx: RuleContext, x, dim, start, length):
    if not isinstance(x, ATensor):
        return ctx.out
    d = norm_dim(dim, x.value.dim())
    ix = _Indexer(ctx, x)
    ix.slice(d, slice(start, start + length))
    return ix.result(ctx.out)


@rule("split", "chunk", "tensor_split", "split_with_sizes", "unbind", "hsplit", "vsplit", "dsplit")
def _split(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    n = x.value.dim()
    name = ctx.opname.rstrip("_")
    if name == "unbind":
        d = norm_dim(arg(args, kwargs, 0, "dim", 0), n)
        out = []
        for k, v in enumerate(ctx.out):
            ix = _Indexer(ctx, x)
            ix.select(d, k)
            out.append(ix.result(v))
        return tuple(out)
    dim_default = {"hsplit": 1 if n > 1 else 0, "vsplit": 0, "dsplit": 2}.get(name, 0)
    d = norm_dim(kwargs.get("dim", args[1] if len(args) > 1 else dim_default), n)
    out, offset = [], 0
    for v in ctx.out:
        m = v.shape[d]
        ix = _Indexer(ctx, x)
        ix.slice(d, slice(offset, offset + m))
        out.append(ix.result(v))
        offset += m
    return tuple(out)


# ------------------------------------------------------------------------------------ joining


@rule("cat", "concat", "concatenate")
def _cat(ctx: RuleContext, tensors, dim=0, **kwargs):
    ts = list(tensors)
    if not any(isinstance(t, ATensor) for t in ts):
        return ctx.out
    ts = [t if isinstance(t, ATensor) else ATensor(torch.as_tensor(t), [None] * torch.as_tensor(t).dim()) for t in ts]
    ref = max(ts, key=lambda t: t.value.dim())
    nd = ref.value.dim()
    d = norm_dim(dim, nd)
    ts = [t for t in ts if t.value.numel() > 0 or t.value.dim() == nd]
    _align_others(ctx, ts, d)
    others = _merged_other_dims(ts, d)
    if any(isinstance(t.dims[d], Feat) and t.dims[d].space.is_site for t in ts):
        return _cat_features(ctx, ts, d, others)
    for t in ts:
        ctx.fix(t.dims[d])  # parameters joined along positions: those axes are positions too
    return _join_positions(ctx, ts, others, d, new_dim=False)


@rule("stack", "hstack", "vstack", "dstack", "column_stack")
def _stack(ctx: RuleContext, tensors, dim=0, **kwargs):
    ts = [t for t in tensors]
    if not any(isinstance(t, ATensor) for t in ts):
        return ctx.out
    if ctx.opname != "stack":
        ctx.fail(f"{ctx.opname} (use torch.stack or torch.cat)") if any(
            isinstance(t, ATensor) and t.has_features for t in ts) else None
        return ATensor(ctx.out, [None] * ctx.out.dim())
    ts = [t if isinstance(t, ATensor) else ATensor(torch.as_tensor(t), [None] * torch.as_tensor(t).dim()) for t in ts]
    nd = ts[0].value.dim()
    d = norm_dim(dim, nd + 1)
    _align_others(ctx, ts, None)
    others = _merged_other_dims(ts, None)
    return _join_positions(ctx, ts, others, d, new_dim=True)


def _align_others(ctx: RuleContext, ts: list[ATensor], d: int | None) -> None:
    first = ts[0]
    for t in ts[1:]:
        pairs = [(a, b) for k, (a, b) in enumerate(zip(first.dims, t.dims)) if k != d]
        ctx.unify_aligned(pairs)


def _merged_other_dims(ts: list[ATensor], d: int | None) -> list:
    out = []
    for k in range(ts[0].value.dim()):
        if k == d:
            out.append(None)
            continue
        labs = [t.dims[k] for t in ts]
        pick = next((l for l in labs if isinstance(l, Feat) and l.space.is_site), None)
        if pick is None:
            pick = next((l for l in labs if isinstance(l, Feat)), None)
        if pick is None:
            pick = next((l for l in labs if isinstance(l, InputDim)), None)
        if pick is None:
            pick = labs[0] if all(isinstance(l, Uniform) for l in labs) else None
        out.append(pick)
    return out


def _cat_features(ctx: RuleContext, ts: list[ATensor], d: int, others: list) -> ATensor:
    if any(isinstance(o, Feat) for o in others):
        ctx.fail("a concatenation of tensors that carry features on two axes")
    feats = [ctx.site_feat(t, d) for t in ts]
    if any(not f.plain for f in feats):
        ctx.fail("a concatenation of split or flattened feature axes")
    var = S.concat([ctx.guard(f.space.var_at, f.start, f.length) for f in feats])
    diag = S.concat([ctx.diag(f) for f in feats])
    site = ctx.new_site(var.size, var=var, diag=diag)
    ctx.record("concat", feats, site)
    ctx.absorb(*ts)
    dims = list(others)
    dims[d] = Feat(site, 0, site.size)
    return ATensor(ctx.out, dims, held=Feat(site, 0, site.size))


def _join_positions(ctx: RuleContext, ts: list[ATensor], others: list, d: int, new_dim: bool) -> ATensor:
    """Concatenate / stack along a non-feature axis (tokens, batch)."""
    dims = list(others)
    if new_dim:
        dims.insert(d, None)
    else:
        labs = [t.dims[d] for t in ts]
        dims[d] = (InputDim(("cat",) + tuple(l.key for l in labs if isinstance(l, InputDim)), ctx.out.shape[d])
                   if all(isinstance(l, InputDim) for l in labs) else None)
    holders = [t for t in ts if t.held is not None]
    params = [t for t in ts if t.held is None and t.param is not None]
    constants = [t for t in ts if t.held is None and t.param is None]
    if not holders:
        return ATensor(ctx.out, dims)
    first = holders[0]
    if len(holders) == 1 and not params:
        kinds = ALL if all(_is_zero(c) for c in constants) else NONE
        y = ctx.elementwise(first, "pad", kinds)
        return ATensor(ctx.out, ctx.remap(dims, first.held, y.held.space) if y.held.space is not first.held.space
                       else dims, held=y.held)
    if any(h.held.length != first.held.length for h in holders):
        ctx.fail("joining stretches of different sizes along a non-feature axis")
    diag = ctx.diag(first.held)
    for h in holders[1:]:
        diag = ctx.guard(S.unify, diag, ctx.diag(h.held))
        ctx.guard(S.unify, ctx.guard(first.held.space.var_at, first.held.start, first.held.length),
                  ctx.guard(h.held.space.var_at, h.held.start, h.held.length))
    if constants and not all(_is_zero(c) for c in constants):
        S.restrict_kinds(diag, NONE)
    site = ctx.site_like(first.held, diag=diag)
    uses = []
    for p in params:
        out_pos = [k + 1 if new_dim and k >= d else k for k in range(p.value.dim())]
        roles = ["neuron" if isinstance(dims[o], Feat) and dims[o].space.is_site else "fixed" for o in out_pos]
        uses.append(ctx.use("value", p, roles))
        for k, role in enumerate(roles):
            if role == "neuron":
                ctx.scale(p, k, Feat(site, 0, site.size), +1)
    if len(holders) == 1:
        ctx.record("affine", [first.held], site, uses, {"op": "insert", "axis": d})
    else:
        ctx.record("stack", [h.held for h in holders], site, uses, {"axis": d})
    ctx.absorb(*holders)
    out_dims = dims
    for h in holders:
        out_dims = ctx.remap(out_dims, h.held, site)
    return ATensor(ctx.out, out_dims, held=Feat(site, 0, site.size))


def _is_zero(t: ATensor) -> bool:
    v = t.value
    return v.numel() == 0 or bool((v == 0).all())
