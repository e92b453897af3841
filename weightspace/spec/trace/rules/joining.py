"""Joining tensors: concatenation along features (a ``concat`` op), and concatenation or stacking
along a non-feature axis (tokens, a new stack dim: ``stack`` ops, or ``affine`` ops inserting
parameter tokens beside a site).
"""
from __future__ import annotations

import torch

from ...vocab import ALL, NONE
from .. import structure as S
from ..context import ATensor, Feat, InputDim, OpKind, RuleContext, Uniform, rule
from ..labels import Space
from .util import is_zero, norm_dim


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
    if all(t.held is None and t.attn is None for t in ts) and any(_param_axis(t.dims[d]) for t in ts):
        return _cat_parameters(ctx, ts, d, others)
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
        pick = next((lab for lab in labs if isinstance(lab, Feat) and lab.space.is_site), None)
        if pick is None:
            pick = next((lab for lab in labs if isinstance(lab, Feat)), None)
        if pick is None:
            pick = next((lab for lab in labs if isinstance(lab, InputDim)), None)
        if pick is None:
            pick = labs[0] if all(isinstance(lab, Uniform) for lab in labs) else None
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
    ctx.record(OpKind.CONCAT, feats, site)
    ctx.absorb(*ts)
    dims = list(others)
    dims[d] = Feat(site, 0, site.size)
    return ATensor(ctx.out, dims, held=Feat(site, 0, site.size))


def _param_axis(lab) -> bool:
    return isinstance(lab, Feat) and lab.space.kind == "param" and lab.plain


def _cat_parameters(ctx: RuleContext, ts: list[ATensor], d: int, others: list) -> ATensor:
    """Parameters (and constants) joined along one of their axes, e.g. a fused qkv bias built as
    ``cat(q_bias, zeros, v_bias)`` (timm's EVA / BEiT): the result's axis is the parameter axes one
    after another, so whatever later meets it (the fused projection's output) permutes each piece
    with its parameter. A constant piece demands nothing where it is the same everywhere (zeros) and
    is pinned otherwise."""
    pieces = []
    for t in ts:
        lab, n = t.dims[d], t.shape[d]
        if _param_axis(lab):
            pieces.append(ctx.guard(lab.space.var_at, lab.start, lab.length))
        elif isinstance(lab, Uniform) or n == 1 and t.param is None:
            pieces.append(S.leaf(n, origin="param"))
        else:
            ctx.fix(lab)
            pieces.append(S.fixed(n))
    var = S.concat(pieces)
    space = Space(var.size, var, kind="param", name=f"{ctx.name}.cat")
    dims = list(others)
    dims[d] = Feat(space, 0, var.size)
    return ATensor(ctx.out, dims)


def _join_positions(ctx: RuleContext, ts: list[ATensor], others: list, d: int, new_dim: bool) -> ATensor:
    """Concatenate / stack along a non-feature axis (tokens, batch)."""
    dims = list(others)
    if new_dim:
        dims.insert(d, None)
    else:
        labs = [t.dims[d] for t in ts]
        dims[d] = (InputDim(("cat",) + tuple(lab.key for lab in labs if isinstance(lab, InputDim)), ctx.out.shape[d])
                   if all(isinstance(lab, InputDim) for lab in labs) else None)
    holders = [t for t in ts if t.held is not None]
    params = [t for t in ts if t.held is None and t.param is not None]
    constants = [t for t in ts if t.held is None and t.param is None]
    if not holders:
        return ATensor(ctx.out, dims)
    first = holders[0]
    if len(holders) == 1 and not params:
        kinds = ALL if all(is_zero(c) for c in constants) else NONE
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
    if constants and not all(is_zero(c) for c in constants):
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
        ctx.record(OpKind.AFFINE, [first.held], site, uses, {"op": "insert", "axis": d})
    else:
        ctx.record(OpKind.STACK, [h.held for h in holders], site, uses, {"axis": d})
    ctx.absorb(*holders)
    out_dims = dims
    for h in holders:
        out_dims = ctx.remap(out_dims, h.held, site)
    return ATensor(ctx.out, out_dims, held=Feat(site, 0, site.size))
