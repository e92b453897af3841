"""Normalization layers: a new site with the same neurons (same group), whose diagonal symmetry is
its own affine parameters; the normalized input's scaling does not survive."""
from __future__ import annotations

from .. import structure as S
from ..context import ATensor, Feat, OpKind, RuleContext, rule
from .linear import op_name
from .util import arg


def _norm(ctx: RuleContext, x: ATensor, fdim: int, params: dict, attrs: dict, param_dims: dict,
          groups: int | None = None) -> ATensor:
    """``param_dims[role]``: for each dim of that parameter, the dim of ``x`` it lines up with."""
    lab = x.dims[fdim]
    per_head = isinstance(lab, Feat) and lab.space.is_site and lab.path
    if per_head:
        if x.held is None:
            ctx.fail("a normalization over split features that are not a site's values")
        region, fin = x.held, x.held
    else:
        fin = ctx.site_feat(x, fdim)
        region = fin.region()
    if groups is not None and 1 < groups < region.length:
        ctx.guard(S.split, ctx.guard(region.space.var_at, region.start, region.length), groups,
                  region.length // groups)
    weight, bias = params.get("weight"), params.get("bias")
    affine = weight is not None or bias is not None
    named = weight or bias
    site = ctx.site_like(region, op_name(ctx, named) if named is not None else ctx.name,
                         diag=None if affine else S.fixed(region.length))
    ctx.break_diag(region)
    uses = []
    for role, p in params.items():
        if p is None:
            continue
        roles = []
        for k, d in enumerate(param_dims[role]):
            if d is None:
                roles.append("fixed")
                continue
            target = x.dims[d] if d != fdim or per_head else fin
            if p.shape[k] != 1:
                ctx.unify(p.dims[k], target)
            roles.append("neuron" if d == fdim else "fixed")
        uses.append(ctx.use(role, p, roles))
        if role in ("weight", "bias"):
            k = param_dims[role].index(fdim) if fdim in param_dims[role] else None
            if k is None or per_head:
                S.fix(site.diag)
            else:
                rel = Feat(site, fin.start - region.start, fin.length, (), fin.inner, fin.outer)
                ctx.scale(p, k, rel, +1)
    ctx.record(OpKind.NORM, [fin], site, uses, attrs)
    ctx.absorb(x)
    if (weight is not None and weight.param is None) or (bias is not None and bias.param is None):
        S.fix(site.diag)
    return ATensor(ctx.out, ctx.remap(list(x.dims), region, site), held=Feat(site, 0, site.size))


@rule("batch_norm", "instance_norm")
def _batch_norm(ctx: RuleContext, x, *args, **kwargs):
    name = ctx.opname
    if name == "batch_norm":  # (input, running_mean, running_var, weight, bias, training, momentum, eps)
        rm, rv = arg(args, kwargs, 0, "running_mean"), arg(args, kwargs, 1, "running_var")
        w, b = arg(args, kwargs, 2, "weight"), arg(args, kwargs, 3, "bias")
        eps = arg(args, kwargs, 6, "eps", 1e-5)
    else:  # (input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
        rm, rv = arg(args, kwargs, 0, "running_mean"), arg(args, kwargs, 1, "running_var")
        w, b = arg(args, kwargs, 2, "weight"), arg(args, kwargs, 3, "bias")
        eps = arg(args, kwargs, 6, "eps", 1e-5)
    fdim = 1 if x.value.dim() > 1 else 0
    params = {"weight": w, "bias": b, "running_mean": rm, "running_var": rv}
    params = {k: v for k, v in params.items() if isinstance(v, ATensor)}
    return _norm(ctx, x, fdim, params, {"type": name.replace("_norm", ""), "eps": eps},
                 {k: [fdim] for k in params})


@rule("layer_norm", "rms_norm")
def _layer_norm(ctx: RuleContext, x, normalized_shape, *args, **kwargs):
    if ctx.opname == "layer_norm":
        w, b, eps = arg(args, kwargs, 0, "weight"), arg(args, kwargs, 1, "bias"), arg(args, kwargs, 2, "eps", 1e-5)
    else:
        w, b, eps = arg(args, kwargs, 0, "weight"), None, arg(args, kwargs, 1, "eps")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    n = x.value.dim()
    normed = list(range(n - len(shape), n))
    feats = [d for d in normed if isinstance(x.dims[d], Feat)]
    if len(feats) > 1 and not all(x.dims[d].space is x.dims[feats[0]].space for d in feats):
        ctx.fail("a normalization over several feature axes")
    fdim = feats[-1] if feats else n - 1
    params = {k: v for k, v in {"weight": w, "bias": b}.items() if isinstance(v, ATensor)}
    return _norm(ctx, x, fdim, params, {"type": ctx.opname.replace("_norm", ""), "eps": eps,
                                        "normalized_shape": shape}, {k: normed for k in params})


@rule("group_norm")
def _group_norm(ctx: RuleContext, x, num_groups, weight=None, bias=None, eps=1e-5):
    params = {k: v for k, v in {"weight": weight, "bias": bias}.items() if isinstance(v, ATensor)}
    return _norm(ctx, x, 1, params, {"type": "group", "eps": eps, "num_groups": num_groups},
                 {k: [1] for k in params}, groups=num_groups)


@rule("local_response_norm")
def _lrn(ctx: RuleContext, *args, **kwargs):
    ctx.fail("local response normalization mixes neighbouring channels by position")
