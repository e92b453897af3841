"""Binary elementwise ops: arithmetic between tensors or with constants, residual joins, biases,
gating. Two tensors' feature dims are matched by broadcasting (:func:`broadcast`); a sum of two
sites joins them (residuals unify groups), a product with or a sum of a parameter is an affine op,
and a constant decides which diagonal symmetries survive (a positive factor keeps both kinds).
Split from :mod:`.elementwise` (one-tensor functions and masking), which reads :func:`broadcast`
and :func:`relabel` from here.
"""
from __future__ import annotations

import numbers

import torch

from ...vocab import activation_label
from .. import structure as S
from ..composite import note_join
from ..context import ALL, NONE, ATensor, Feat, InputDim, OpKind, RuleContext, Uniform, rule
from .util import is_zero


def _is_scalar(v) -> bool:
    return isinstance(v, numbers.Number) or (isinstance(v, ATensor) and v.value.dim() == 0 and not v.has_features
                                             and v.held is None and v.param is None)


def _scalar_value(v):
    return v.value.item() if isinstance(v, ATensor) else v


def _role(t: ATensor) -> str:
    if t.held is not None:
        return "site"
    if t.attn is not None:
        return "scores"
    if any(isinstance(d, Feat) and d.space.kind == "param" for d in t.dims):
        return "param"
    return "const"


def broadcast(ctx: RuleContext, a: ATensor, b: ATensor):
    """Aligned label pairs for the output dims, and the output's labels (where both sides have the
    dim, an operand holding a site's values decides the label; otherwise the more specific label).
    A size-1 dim broadcast against a longer one pins the feature it holds (:meth:`RuleContext.spread`)."""
    primary = a if a.held is not None else b if b.held is not None else None
    nd = ctx.out.dim() if isinstance(ctx.out, torch.Tensor) else max(a.value.dim(), b.value.dim())
    la = [None] * (nd - a.value.dim()) + list(a.dims)
    lb = [None] * (nd - b.value.dim()) + list(b.dims)
    sa = [1] * (nd - a.value.dim()) + list(a.shape)
    sb = [1] * (nd - b.value.dim()) + list(b.shape)
    pairs, out = [], []
    for k in range(nd):
        if sa[k] == sb[k]:
            pairs.append((la[k], lb[k]))
            if primary is a:
                out.append(la[k])
            elif primary is b:
                out.append(lb[k])
            else:
                out.append(_pick(la[k], lb[k]))
        elif sa[k] == 1:
            ctx.spread(la[k], sb[k])
            out.append(lb[k])
        else:
            ctx.spread(lb[k], sa[k])
            out.append(la[k])
    return pairs, out, nd


def _pick(a, b):
    """The label an output dim takes when two aligned inputs meet: a site's features first."""
    for test in (lambda lab: isinstance(lab, Feat) and lab.space.is_site, lambda lab: isinstance(lab, Feat),
                 lambda lab: isinstance(lab, InputDim)):
        if test(a):
            return a
        if test(b):
            return b
    if isinstance(a, Uniform) and b is not None:
        return b
    return a


@rule("add", "sub", "subtract", "rsub", "mul", "multiply", "div", "divide", "true_divide",
      "maximum", "minimum", "fmax", "fmin", "floor_divide", "remainder", "fmod", "atan2", "hypot",
      "copysign", "xlogy", "logaddexp")
def _binary_rule(ctx: RuleContext, a, b=None, *args, **kwargs):
    name = ctx.opname.rstrip("_")
    name = {"subtract": "sub", "multiply": "mul", "divide": "div", "true_divide": "div"}.get(name, name)
    alpha = kwargs.get("alpha", 1)
    rounding = kwargs.get("rounding_mode")
    if name == "div" and rounding is not None:
        name = "floor_divide"
    return binary(ctx, a, b, name, alpha=alpha)


def binary(ctx: RuleContext, a, b, name: str, alpha=1):
    A = a if isinstance(a, ATensor) else None
    B = b if isinstance(b, ATensor) else None
    if A is None and B is None:
        return ctx.out
    if name == "rsub":  # rsub(x, c) = c - x
        a, b, A, B, name = b, a, B, A, "sub"
    if B is None or _is_scalar(b) and not (A is None or _is_scalar(a)):
        return _with_scalar(ctx, A, _scalar_value(b), name, tensor_first=True)
    if A is None or _is_scalar(a):
        return _with_scalar(ctx, B, _scalar_value(a), name, tensor_first=False)
    A, B = _input_as_site(ctx, A, B), _input_as_site(ctx, B, A)
    pairs, dims, nd = broadcast(ctx, A, B)
    ra, rb = _role(A), _role(B)
    if "scores" in (ra, rb) and {ra, rb} & {"site", "param"} and name in ("add", "sub"):
        return _biased_scores(ctx, A, B, pairs, dims, nd)
    if ra == "site" and rb == "site":
        return _join(ctx, A, B, pairs, dims, name, alpha)
    if "site" in (ra, rb):
        x, other = (A, B) if ra == "site" else (B, A)
        x_first = x is A
        if _role(other) == "param":
            return _affine(ctx, x, other, pairs, dims, name, x_first, nd)
        ctx.unify_aligned(pairs)
        if name in ("mul", "div") and x_first or name == "mul":
            kinds = ALL
        elif name in ("add", "sub") and is_zero(other):
            kinds = ALL
        else:
            kinds = NONE
        y = ctx.elementwise(x, activation_label(name, "const"), kinds)
        return ATensor(ctx.out, relabel(dims, x, y), held=y.held)
    ctx.unify_aligned(pairs)
    attn = A.attn or B.attn
    return ATensor(ctx.out, dims, attn=attn)


def _biased_scores(ctx: RuleContext, A: ATensor, B: ATensor, pairs, dims, nd: int) -> ATensor:
    """Attention logits plus a bias computed from parameters (T5's relative position bias, a
    learned ALiBi, Swin's bias table): aligned dims unify, so a per-head bias permutes with the
    heads; the result is still the logits of the same (q, k) pair. The bias's own rescalings break
    (it is added inside a softmax)."""
    scores, bias = (A, B) if A.attn is not None else (B, A)
    ctx.unify_aligned(pairs)
    ctx.break_diag(bias.held)
    ctx.absorb(bias)
    pad = nd - scores.value.dim()
    out = [scores.dims[k - pad] if k >= pad and scores.shape[k - pad] == ctx.out.shape[k] else dims[k]
           for k in range(nd)]
    return ATensor(ctx.out, out, attn=scores.attn)


def _input_as_site(ctx: RuleContext, c: ATensor, x: ATensor) -> ATensor:
    """A network input meeting a site's values on the site's feature axis (a skip connection from
    the input): the input is read as an input site there."""
    if c.held is not None or x.held is None or c.attn is not None:
        return c
    nd = max(c.value.dim(), x.value.dim())
    off_c, off_x = nd - c.value.dim(), nd - x.value.dim()
    for k in range(nd):
        kc, kx = k - off_c, k - off_x
        if kc < 0 or kx < 0:
            continue
        lc, lx = c.dims[kc], x.dims[kx]
        if isinstance(lc, InputDim) and isinstance(lx, Feat) and lx.space is x.held.space and lx.plain \
                and c.shape[kc] == x.held.length:
            f = ctx.site_feat(c, kc)
            dims = list(c.dims)
            dims[kc] = f
            return c.like(c.value, dims, held=f, param=None)
    return c


def relabel(dims: list, x: ATensor, y: ATensor) -> list:
    if y.held is not None and x.held is not None and y.held.space is not x.held.space:
        return RuleContext.remap(dims, x.held, y.held.space)
    return dims


def _with_scalar(ctx: RuleContext, x: ATensor, c, name: str, tensor_first: bool):
    if x.held is None:
        return x.like(ctx.out, param=None) if isinstance(ctx.out, torch.Tensor) else ctx.out
    if name == "mul" or (name == "div" and tensor_first):
        kinds = ALL if c != 0 else NONE
        label = activation_label("mul", f"{c:g}" if name == "mul" else f"{1 / c:g}" if c else "inf")
    elif name in ("add", "sub"):
        if c == 0:
            return x.like(ctx.out) if tensor_first or name == "add" else ctx.elementwise(x, "neg", ALL)
        kinds = NONE
        label = activation_label("add", f"{c if name == 'add' else -c:g}") if tensor_first else \
            activation_label("rsub", f"{c:g}")
    else:
        kinds, label = NONE, activation_label(name, str(c))
    return ctx.elementwise(x, label, kinds)


def _join(ctx: RuleContext, A: ATensor, B: ATensor, pairs, dims, name: str, alpha) -> ATensor:
    """Two sites' values combined: a residual addition or a gating product."""
    ctx.unify_aligned(pairs)
    ha, hb = A.held, B.held
    if ha.length != hb.length or not _feature_dims_align(A, B, pairs):
        # the two operands' neurons lie on different axes (token mixing): symmetry is settled by the
        # aligned labels above; the values are no longer one site's, so no join is recorded
        ctx.break_diag(ha)
        ctx.break_diag(hb)
        return ATensor(ctx.out, dims)
    ctx.guard(S.unify, ctx.guard(ha.space.var_at, ha.start, ha.length), ctx.guard(hb.space.var_at, hb.start, hb.length))
    if name in ("add", "sub"):
        diag = ctx.guard(S.unify, ctx.diag(ha), ctx.diag(hb))
        site = ctx.site_like(ha, diag=diag)
        sign = -alpha if name == "sub" else alpha
        ctx.record(OpKind.ADD, [ha, hb], site, attrs={"signs": (1, sign)})
    elif name in ("mul", "div", "maximum", "minimum"):
        ctx.break_diag(ha)
        ctx.break_diag(hb)
        site = ctx.site_like(ha, diag=S.fixed(ha.length))
        ctx.record(OpKind.MUL, [ha, hb], site, attrs={"op": name})
    else:
        ctx.fail(f"'{name}' of two hidden activations")
    note_join(ctx.state, ha, hb, site, name, ctx.out)
    ctx.absorb(A, B)
    out = ctx.remap(ctx.remap(dims, ha, site), hb, site)
    return ATensor(ctx.out, out, held=Feat(site, 0, site.size))


def _feature_dims_align(A: ATensor, B: ATensor, pairs) -> bool:
    return any(isinstance(a, Feat) and isinstance(b, Feat) and a.space is A.held.space and b.space is B.held.space
               for a, b in pairs)


def _affine(ctx: RuleContext, x: ATensor, p: ATensor, pairs, dims, name: str, x_first: bool, nd: int) -> ATensor:
    """A parameter added to / multiplying / dividing a site's values: a bias or a per-neuron scale."""
    ctx.unify_aligned(pairs)
    # which dims of p line up with x's features
    off = nd - p.value.dim()
    roles = []
    for k in range(p.value.dim()):
        o = dims[off + k]
        aligned = isinstance(o, Feat) and o.space.is_site and p.shape[k] > 1
        roles.append("neuron" if aligned else "fixed")
    neuron_dims = [k for k, r in enumerate(roles) if r == "neuron"]
    if name in ("add", "sub"):
        diag = ctx.diag(x.held)
        if not neuron_dims:
            ctx.break_diag(x.held)
        site = ctx.site_like(x.held, diag=diag)
    elif name in ("mul", "div"):
        site = ctx.site_like(x.held)
        if not neuron_dims:
            ctx.break_diag(x.held)
            S.fix(site.diag)
    else:
        ctx.fail(f"'{name}' of hidden features and a parameter")
    tf = Feat(site, 0, site.size)
    in_exp, out_exp = {"add": (None, +1), "sub": (None, +1), "mul": (-1, +1), "div": (+1, -1)}[name]
    if name == "div" and not x_first:
        ctx.fail("a parameter divided by hidden features")
    for k in neuron_dims:
        feat_out = dims[off + k]
        rel = Feat(site, feat_out.start - x.held.start, feat_out.length, feat_out.path, feat_out.inner,
                   feat_out.outer) if feat_out.space is x.held.space else tf
        if in_exp is not None:
            ctx.scale(p, k, feat_out, in_exp)
        ctx.scale(p, k, rel, out_exp)
    op = name if x_first or name in ("add", "mul") else f"r{name}"
    ctx.record(OpKind.AFFINE, [x.held], site, [ctx.use("value", p, roles)], {"op": op})
    if p.param is None:
        ctx.break_diag(x.held)
        S.fix(site.diag)
    ctx.absorb(x)
    return ATensor(ctx.out, ctx.remap(dims, x.held, site), held=tf)
