"""Parameterized linear maps: Linear, convolutions, embeddings, matmul / einsum with a parameter;
and products of two activations (attention scores and attention outputs)."""
from __future__ import annotations

import string


from .. import structure as S
from ..context import ATensor, Feat, OpKind, RuleContext, Uniform, rule
from .grouped import grouped_output, is_grouped
from .util import arg


def op_name(ctx: RuleContext, w: ATensor | None) -> str:
    """Ops are named after the module that owns their weight (``layer1.0.conv1``)."""
    if ctx.name_hint:
        return ctx.name_hint
    if w is None or w.param is None:
        return ctx.name
    name = w.param
    full = all(not isinstance(d, Feat) or d.space.kind != "param" or
               (d.start == 0 and d.length == d.space.size) for d in w.dims) and not w.meta.get("pinned")
    if full:
        return name.rsplit(".", 1)[0] if "." in name else name
    ranges = [f"{d.start}:{d.start + d.length}" for d in w.dims
              if isinstance(d, Feat) and d.space.kind == "param" and (d.start, d.length) != (0, d.space.size)]
    return f"{name}[{','.join(ranges)}]"


def _computed(ctx: RuleContext, fin: Feat, out: Feat, *ts: ATensor | None) -> None:
    """A weight computed in forward (weight norm, hypernetworks) cannot be rescaled by a symmetry."""
    if any(t is not None and t.param is None for t in ts):
        ctx.break_diag(fin.region() if fin.space.is_site else None)
        ctx.break_diag(out)


def _linear_core(ctx, x: ATensor, x_dim: int, w: ATensor, w_in: int, w_out: int, bias: ATensor | None,
                 attrs: dict | None = None) -> Feat:
    """Shared by every parameterized linear map: reads dim ``x_dim`` of ``x`` through weight axis
    ``w_in`` and writes a new site through axis ``w_out``; returns the new site's features."""
    fin = ctx.site_feat(x, x_dim)
    ctx.unify(w.dims[w_in], fin)
    site = ctx.new_site(w.shape[w_out], op_name(ctx, w))
    tf = Feat(site, 0, site.size)
    ctx.unify(w.dims[w_out], tf)
    if bias is not None:
        ctx.unify(bias.dims[-1], tf)
    ctx.scale(w, w_in, fin, -1)
    ctx.scale(w, w_out, tf, +1)
    if bias is not None:
        ctx.scale(bias, bias.value.dim() - 1, tf, +1)
    roles = ["fixed"] * w.value.dim()
    roles[w_in], roles[w_out] = "in", "out"
    uses = [ctx.use("weight", w, roles)]
    if bias is not None:
        uses.append(ctx.use("bias", bias, ["fixed"] * (bias.value.dim() - 1) + ["out"]))
    ctx.record(OpKind.LINEAR, [fin], site, uses, attrs)
    ctx.absorb(x)
    _computed(ctx, fin, tf, w, bias)
    return tf


@rule("linear")
def _linear(ctx: RuleContext, x, weight, bias=None):
    if not isinstance(weight, ATensor) or weight.value.dim() != 2:
        ctx.fail("linear with a weight that is not a 2-d tensor")
    tf = _linear_core(ctx, x, x.value.dim() - 1, weight, 1, 0, bias)
    return ATensor(ctx.out, list(x.dims[:-1]) + [tf], held=tf)


@rule("bilinear")
def _bilinear(ctx: RuleContext, *args, **kwargs):
    ctx.fail("bilinear maps mix two feature sets multiplicatively")


# ------------------------------------------------------------------------------------ convolution


def _conv_args(name: str, args, kwargs):
    transposed = "transpose" in name
    bias = arg(args, kwargs, 0, "bias")
    if transposed:  # (input, weight, bias, stride, padding, output_padding, groups, dilation)
        stride = arg(args, kwargs, 1, "stride", 1)
        padding = arg(args, kwargs, 2, "padding", 0)
        output_padding = arg(args, kwargs, 3, "output_padding", 0)
        groups = arg(args, kwargs, 4, "groups", 1)
        dilation = arg(args, kwargs, 5, "dilation", 1)
        return bias, dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                          dilation=dilation, transposed=True)
    stride = arg(args, kwargs, 1, "stride", 1)
    padding = arg(args, kwargs, 2, "padding", 0)
    dilation = arg(args, kwargs, 3, "dilation", 1)
    groups = arg(args, kwargs, 4, "groups", 1)
    return bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups, transposed=False)


@rule("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv(ctx: RuleContext, x, weight, *args, **kwargs):
    bias, attrs = _conv_args(ctx.opname, args, kwargs)
    g = attrs["groups"]
    transposed = attrs["transposed"]
    k = weight.value.dim() - 2
    batched = x.value.dim() == k + 2
    cdim = 1 if batched else 0
    w_in, w_out = (0, 1) if transposed else (1, 0)
    for d in range(x.value.dim() - k, x.value.dim()):
        ctx.fix(x.dims[d])  # a kernel slides over these positions: they cannot be permuted
    fin = ctx.site_feat(x, cdim)
    if not fin.plain:
        ctx.fail("a convolution over split or flattened features")
    c_out = weight.shape[w_out] * (g if transposed else 1)
    site = ctx.new_site(c_out, op_name(ctx, weight))
    tf = Feat(site, 0, c_out)
    attrs = dict(attrs, kernel_size=tuple(weight.shape[2:]))
    if g == 1:
        ctx.unify(weight.dims[w_in], fin)
        ctx.unify(weight.dims[w_out], tf)
        ctx.scale(weight, w_in, fin, -1)
        ctx.scale(weight, w_out, tf, +1)
    else:
        _grouped(ctx, weight, fin, tf, g, transposed)
    if bias is not None:
        ctx.unify(bias.dims[0], tf)
        ctx.scale(bias, 0, tf, +1)
    roles = ["kernel"] * weight.value.dim()
    roles[w_in], roles[w_out] = "in", "out"
    uses = [ctx.use("weight", weight, roles)]
    if bias is not None:
        uses.append(ctx.use("bias", bias, ["out"]))
    ctx.record(OpKind.LINEAR, [fin], site, uses, attrs)
    ctx.absorb(x)
    _computed(ctx, fin, tf, weight, bias)
    dims = list(x.dims)
    dims[cdim] = tf
    for d in range(x.value.dim() - k, x.value.dim()):
        dims[d] = None
    return ATensor(ctx.out, dims, held=tf)


def _grouped(ctx: RuleContext, w: ATensor, fin: Feat, tf: Feat, g: int, transposed: bool) -> None:
    """Grouped convolution: channel groups move as blocks, shared between input and output; inside a
    block, the side indexed by a weight axis must be permuted alike in every block."""
    c_in, c_out = fin.length, tf.length
    bi, bo = c_in // g, c_out // g
    in_var = ctx.resolve(fin)
    out_var = ctx.resolve(tf)
    # the side read through a shared weight axis: within-block order shared by all blocks
    shared_side, free_side = ((in_var, bi), (out_var, bo)) if not transposed else ((out_var, bo), (in_var, bi))
    (sv, sb), (fv, fb) = shared_side, free_side
    if sb > 1:
        ws = ctx.guard(S.split, sv, g, sb)
        inner_shared = ctx.guard(S.make_shared, ws)
        outer_s = ws.outer if ws.state == "wreath" else None
    else:
        inner_shared, outer_s = None, sv
    if fb > 1:
        wf = ctx.guard(S.split, fv, g, fb)
        outer_f = wf.outer if wf.state == "wreath" else None
    else:
        outer_f = fv
    if outer_s is not None and outer_f is not None:
        ctx.guard(S.unify, outer_s, outer_f)
    else:
        for v in (outer_s, outer_f):
            if v is not None:
                S.fix(v)
    w_shared_axis = 1  # axis 1 of the weight holds the within-block index of the shared side
    w_block_axis = 0
    if inner_shared is not None:
        ctx.guard(S.unify, ctx.resolve(w.dims[w_shared_axis]), inner_shared)
    ctx.unify(w.dims[w_block_axis], fin if transposed else tf)
    # diagonal symmetries: the block-axis side scales rows; the other only when blocks are 1 wide
    row_site = fin if transposed else tf
    other = tf if transposed else fin
    ctx.scale(w, 0, row_site, +1 if not transposed else -1)
    if sb == 1:
        ctx.scale(w, 0, Feat(other.space, other.start, other.length, inner=fb), -1 if not transposed else +1)
    else:
        ctx.break_diag(other)


# ------------------------------------------------------------------------------------ embedding


@rule("embedding")
def _embedding(ctx: RuleContext, ids, weight, *args, **kwargs):
    v = weight.shape[0]
    vocab = ctx.state.input_site(("vocab", weight.param or ctx.name), v, f"{op_name(ctx, weight)}.vocab")
    vf = Feat(vocab, 0, v)
    ctx.unify(weight.dims[0], vf)
    site = ctx.new_site(weight.shape[1], op_name(ctx, weight))
    tf = Feat(site, 0, site.size)
    ctx.unify(weight.dims[1], tf)
    ctx.scale(weight, 1, tf, +1)
    ctx.record(OpKind.LINEAR, [vf], site, [ctx.use("weight", weight, ["in", "out"])],
               {"embedding": True, "padding_idx": arg(args, kwargs, 0, "padding_idx")})
    _computed(ctx, vf, tf, weight)
    dims = list(ids.dims) if isinstance(ids, ATensor) else [None] * (ctx.out.dim() - 1)
    return ATensor(ctx.out, [d if not isinstance(d, Feat) else None for d in dims] + [tf], held=tf)


# ------------------------------------------------------------------------------------ contractions


def _is_param_like(t: ATensor) -> bool:
    return t.held is None and t.attn is None and any(isinstance(d, Feat) and d.space.kind == "param" for d in t.dims)


def matmul_letters(da: int, db: int) -> tuple[str, str, str]:
    """einsum letters of ``torch.matmul`` for operands of ``da`` and ``db`` dims."""
    if da == 1 and db == 1:
        return "k", "k", ""
    batch = string.ascii_uppercase[:max(da, db) - 2]
    if da == 1:
        return "k", batch + "kj", batch + "j"
    if db == 1:
        return batch + "ik", "k", batch + "i"
    return batch[len(batch) - (da - 2):] + "ik", batch[len(batch) - (db - 2):] + "kj", batch + "ij"


@rule("matmul", "mm", "bmm", "mv", "dot", "inner", "vdot")
def _matmul(ctx: RuleContext, a, b, *args, **kwargs):
    la, lb, lo = matmul_letters(a.value.dim(), b.value.dim())
    return contract(ctx, [(a, la), (b, lb)], lo)


@rule("einsum")
def _einsum(ctx: RuleContext, equation, *operands):
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        ctx.fail("einsum equation and operands disagree")
    free = [c for c in string.ascii_letters if c not in eq]
    n_ell = max((op.value.dim() - len(t.replace("...", "")) for t, op in zip(terms, operands) if "..." in t), default=0)
    ell = "".join(free[:n_ell])
    letters = []
    for t, op in zip(terms, operands):
        k = op.value.dim() - len(t.replace("...", ""))
        letters.append(t.replace("...", ell[len(ell) - k:] if k else ""))
    if not _:
        counts = {c: sum(term.count(c) for term in letters) for c in set("".join(letters))}
        rhs = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        rhs = rhs.replace("...", ell)
    if len(operands) != 2:
        if len(operands) == 1:
            return _einsum_unary(ctx, operands[0], letters[0], rhs)
        ctx.fail("einsum over more than two operands")
    return contract(ctx, list(zip(operands, letters)), rhs)


def _einsum_unary(ctx: RuleContext, x: ATensor, lx: str, lo: str) -> ATensor:
    if len(set(lx)) != len(lx):
        ctx.fail("einsum diagonal")
    summed = [i for i, c in enumerate(lx) if c not in lo]
    if any(isinstance(x.dims[i], Feat) for i in summed):
        held = None
    else:
        held = x.held
    dims = [x.dims[lx.index(c)] for c in lo]
    return ATensor(ctx.out, dims, held=held, attn=x.attn)


def contract(ctx: RuleContext, ops: list[tuple[ATensor, str]], lo: str) -> ATensor:
    (X, lx), (Y, ly) = ops
    if not isinstance(X, ATensor) or not isinstance(Y, ATensor):
        ctx.fail("matmul with a non-tensor operand")
    px, py = _is_param_like(X), _is_param_like(Y)
    if px != py:
        (w, lw), (x, lxx) = ((X, lx), (Y, ly)) if px else ((Y, ly), (X, lx))
        return _param_contraction(ctx, x, lxx, w, lw, lo)
    return _activation_contraction(ctx, X, lx, Y, ly, lo)


def _size(t: ATensor, letters: str, c: str) -> int:
    return t.shape[letters.index(c)]


def _param_contraction(ctx: RuleContext, x: ATensor, lx: str, w: ATensor, lw: str, lo: str) -> ATensor:
    contracted = [c for c in lw if c in lx and c not in lo]
    free_w = [c for c in lw if c not in lx]
    batch_w = [c for c in lw if c in lx and c in lo and _size(w, lw, c) > 1]
    if len(contracted) != 1 or len(free_w) != 1 or free_w[0] not in lo or batch_w:
        ctx.fail("a parameter contracted with activations over several axes, or with batch axes")
    c, o = contracted[0], free_w[0]
    tf = _linear_core(ctx, x, lx.index(c), w, lw.index(c), lw.index(o), None)
    dims = [tf if ch == o else (x.dims[lx.index(ch)] if ch in lx else None) for ch in lo]
    return ATensor(ctx.out, dims, held=tf)


def _pairs(ctx: RuleContext, X: ATensor, lx: str, Y: ATensor, ly: str, letters) -> list:
    pairs = []
    for c in letters:
        i, j = lx.index(c), ly.index(c)
        if X.shape[i] == Y.shape[j]:
            pairs.append((X.dims[i], Y.dims[j]))
        elif X.shape[i] == 1:  # a broadcast batch dim
            ctx.spread(X.dims[i], Y.shape[j])
        elif Y.shape[j] == 1:
            ctx.spread(Y.dims[j], X.shape[i])
    return pairs


def _within(d, region: Feat) -> bool:
    return isinstance(d, Feat) and d.space is region.space and region.start <= d.start and \
        d.start + d.length <= region.start + region.length


def _out_labels(X: ATensor, lx: str, Y: ATensor, ly: str, lo: str, prefer: Feat | None = None) -> list:
    """Labels of the output dims; where both operands have a dim, one inside ``prefer`` wins."""
    dims = []
    for c in lo:
        cands = []
        for t, lt in ((X, lx), (Y, ly)):
            if c in lt and t.shape[lt.index(c)] != 1:
                cands.append(t.dims[lt.index(c)])
        if prefer is not None:
            cands.sort(key=lambda d: 0 if _within(d, prefer) else 1)
        pick = next((d for d in cands if isinstance(d, Feat)), cands[0] if cands else Uniform(1))
        dims.append(pick)
    return dims


def _activation_contraction(ctx: RuleContext, X: ATensor, lx: str, Y: ATensor, ly: str, lo: str) -> ATensor:
    shared = [c for c in lx if c in ly]
    contracted = [c for c in shared if c not in lo]
    batch = [c for c in shared if c in lo]
    feat_contraction = any(isinstance(X.dims[lx.index(c)], Feat) or isinstance(Y.dims[ly.index(c)], Feat)
                           for c in contracted)
    if feat_contraction:
        ctx.unify_aligned(_pairs(ctx, X, lx, Y, ly, contracted + batch))
        dims = _out_labels(X, lx, Y, ly, lo)
        attn = (X.held, Y.held) if X.held is not None and Y.held is not None else None
        return ATensor(ctx.out, dims, attn=attn)
    probs, values = (X, Y) if X.attn is not None else (Y, X) if Y.attn is not None else (None, None)
    if probs is not None and values.held is not None:
        lp, lv = (lx, ly) if probs is X else (ly, lx)
        ctx.unify_aligned(_pairs(ctx, X, lx, Y, ly, batch))
        dims = _out_labels(X, lx, Y, ly, lo, prefer=values.held)
        if len(lo) >= 3 and lo[-3] in lp and lo[-1] in lv:  # key / value heads repeated (grouped-query)
            q_heads, heads, head_dim = probs.dims[lp.index(lo[-3])], ctx.out.shape[-3], ctx.out.shape[-1]
            if is_grouped(q_heads, heads, values, head_dim):
                return grouped_output(ctx, probs.attn, values, values.dims[lv.index(lo[-1])], q_heads, heads,
                                      head_dim, dims[:-3], dims[-2], {})
        return attention_output(ctx, probs.attn, values, dims)
    holders = [t for t in (X, Y) if t.held is not None]
    if len(holders) == 2:
        ctx.fail("a product of two hidden activations that is not attention")
    ctx.unify_aligned(_pairs(ctx, X, lx, Y, ly, contracted + batch))
    dims = _out_labels(X, lx, Y, ly, lo, prefer=holders[0].held if holders else None)
    if holders:  # a fixed linear mixing of positions: the neurons keep their values' meaning
        return ATensor(ctx.out, dims, held=holders[0].held)
    return ATensor(ctx.out, dims, attn=X.attn or Y.attn)


def attention_output(ctx: RuleContext, qk: tuple[Feat, Feat], v: ATensor, dims: list,
                     attrs: dict | None = None) -> ATensor:
    """softmax(q k^T) v: a new site whose neurons are v's (same group), linear in v's values."""
    held = v.held
    site = ctx.site_like(held, name=f"{ctx.path}.attention" if ctx.path else "attention", diag=ctx.diag(held))
    heads = next((d.path[-1][1:] for d in v.dims if isinstance(d, Feat) and d.space is held.space and d.path),
                 (1, held.length))
    a = {"heads": heads[0], "head_dim": heads[1]}
    a.update(attrs or {})
    ctx.record(OpKind.ATTENTION, [qk[0], qk[1], held], site, attrs=a)
    ctx.absorb(v)
    return ATensor(ctx.out, ctx.remap(dims, held, site), held=Feat(site, 0, site.size))


@rule("addmm")
def _addmm(ctx: RuleContext, bias, a, b, *, beta=1, alpha=1):
    la, lb, lo = matmul_letters(a.value.dim(), b.value.dim())
    if _is_param_like(b) and isinstance(bias, ATensor) and _is_param_like(bias):
        tf = _linear_core(ctx, a, a.value.dim() - 1, b, 0, 1, bias)
        return ATensor(ctx.out, list(a.dims[:-1]) + [tf], held=tf)
    ctx.fail("addmm that is not a linear layer")
