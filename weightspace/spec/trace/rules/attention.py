"""Attention: ``F.scaled_dot_product_attention`` and ``F.multi_head_attention_forward``
(``nn.MultiheadAttention``). Hand-written attention (softmax(q k^T) v) goes through the matmul
rules, which recognise the same structure."""
from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F

from .. import structure as S
from ..context import ATensor, Feat, RuleContext, Uniform, rule
from .grouped import WHY, grouped_output, is_grouped
from .linear import attention_output


@rule("scaled_dot_product_attention")
def _sdpa(ctx: RuleContext, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    if dropout_p:
        ctx.random_draw()  # sdpa applies dropout whenever dropout_p > 0, in eval mode too
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, ATensor) or t.held is None:
            ctx.fail(f"attention whose {name} is not the output of a parameterized layer")
    nq = q.value.dim()
    if enable_gqa and nq >= 3 and q.shape[-3] != k.shape[-3]:
        return _grouped_query(ctx, q, k, v, attn_mask, is_causal, scale)
    nb = nq - 2
    pairs_qk = [(q.dims[i], k.dims[i]) for i in range(nb) if q.shape[i] == k.shape[i]]
    pairs_qk.append((q.dims[-1], k.dims[-1]))
    ctx.unify_aligned(pairs_qk)
    ctx.unify_aligned([(q.dims[i], v.dims[i]) for i in range(nb) if q.shape[i] == v.shape[i]])
    if isinstance(attn_mask, ATensor):
        _mask(ctx, attn_mask, list(q.dims[:-1]) + [k.dims[-2]], list(q.shape[:-1]) + [k.shape[-2]])
    d = q.shape[-1]
    if nq >= 3 and is_grouped(q.dims[-3], q.shape[-3], v, v.shape[-1]):  # k / v heads repeated (repeat_kv)
        attrs = {"causal": bool(is_causal), "scale": scale if scale is not None else 1 / math.sqrt(d),
                 "masked": attn_mask is not None}
        return grouped_output(ctx, (q.held, k.held), v, v.dims[-1], q.dims[-3], q.shape[-3], v.shape[-1],
                              list(q.dims[:-3]), q.dims[-2], attrs)
    dims = [v.dims[i] if v.shape[i] != 1 else q.dims[i] for i in range(nb)] + [q.dims[-2], v.dims[-1]]
    return attention_output(ctx, (q.held, k.held), v, dims,
                            {"causal": bool(is_causal), "scale": scale if scale is not None else 1 / math.sqrt(d),
                             "masked": attn_mask is not None})


def _grouped_query(ctx: RuleContext, q: ATensor, k: ATensor, v: ATensor, attn_mask, is_causal, scale) -> ATensor:
    """Grouped-query attention: ``H`` query heads in ``Hk`` groups of ``r``, group ``g`` reading key /
    value head ``g``. Key and value heads move together, each carrying its group of query heads
    along; query heads are free inside their group. One value head feeds ``r`` output heads, so a
    within-head permutation would have to be the same on all of them: the within-head orders are
    pinned (rotary embeddings pin those of q and k anyway)."""
    H, Hk, d = q.shape[-3], k.shape[-3], q.shape[-1]
    if H % Hk or v.shape[-3] != Hk:
        ctx.fail(f"grouped-query attention with {H} query heads and {Hk} key / {v.shape[-3]} value heads")
    nb = q.value.dim() - 3
    ctx.unify_aligned([(q.dims[i], k.dims[i]) for i in range(nb) if q.shape[i] == k.shape[i]] +
                      [(k.dims[i], v.dims[i]) for i in range(nb) if k.shape[i] == v.shape[i]])
    for lab in (q.dims[-1], k.dims[-1]):
        ctx.pin(lab, WHY)
    kv_heads = _heads(ctx, k.dims[-3], Hk)
    ctx.guard(S.unify, kv_heads, _heads(ctx, v.dims[-3], Hk))
    groups = ctx.guard(S.split, ctx.resolve(q.dims[-3]), Hk, H // Hk)
    ctx.guard(S.unify, groups.outer if groups.state == "wreath" else S.fixed(Hk), kv_heads)
    if attn_mask is not None and isinstance(attn_mask, ATensor):
        _mask(ctx, attn_mask, list(q.dims[:-1]) + [k.dims[-2]], list(q.shape[:-1]) + [k.shape[-2]])
    attrs = {"causal": bool(is_causal), "scale": scale if scale is not None else 1 / math.sqrt(d),
             "masked": attn_mask is not None}
    return grouped_output(ctx, (q.held, k.held), v, v.dims[-1], q.dims[-3], H, v.shape[-1], list(q.dims[:-3]),
                          q.dims[-2], attrs)


def _heads(ctx: RuleContext, label, n: int) -> S.Var:
    """The variable of a head axis (a single head, or heads that are positions, are fixed)."""
    return ctx.resolve(label) if isinstance(label, Feat) else S.fixed(n)


def _mask(ctx: RuleContext, mask: ATensor, score_dims: list, score_shape: list) -> None:
    """An attention mask or additive bias, broadcast against the scores ``(..., heads, Lq, Lk)``.

    Its dims line up with the scores' from the right. A dim of size 1 is broadcast (a padding mask
    shared by all heads leaves them free); a dim as long as the scores' is aligned with it, so a
    per-head bias that is a parameter or computed from one (T5's relative position bias, a learned
    ALiBi) permutes with the heads, one that is a constant varying over heads pins them, and one
    the same for every head (``expand``-ed) demands nothing. Adding to logits breaks the bias's own
    rescalings."""
    pairs = []
    for j in range(1, min(mask.value.dim(), len(score_dims)) + 1):
        n, m = score_shape[-j], mask.shape[-j]
        if n == m and isinstance(score_dims[-j], Feat) and not isinstance(mask.dims[-j], (Feat, Uniform)):
            ctx.pin(score_dims[-j], "an attention mask / bias that differs along this axis and is not computed "
                    "from parameters pins it (a mask the same for every head leaves the heads free)")
        elif n == m:
            pairs.append((mask.dims[-j], score_dims[-j]))
        elif m == 1:
            ctx.spread(mask.dims[-j], n)
    ctx.unify_aligned(pairs)
    ctx.break_diag(mask.held)
    ctx.absorb(mask)


@rule("multi_head_attention_forward")
def _mha(ctx: RuleContext, query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
         bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True,
         key_padding_mask=None, need_weights=True, attn_mask=None, use_separate_proj_weight=False,
         q_proj_weight=None, k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
         average_attn_weights=True, is_causal=False):
    """nn.MultiheadAttention, rebuilt from the rules of its parts: three input projections (slices of
    the fused in_proj_weight), scaled dot-product attention over heads, the output projection."""
    if training and dropout_p:
        ctx.random_draw()
    if static_k is not None or static_v is not None:
        ctx.fail("multi-head attention with static keys / values")
    batched = query.value.dim() == 3
    E, H = query.shape[-1], num_heads
    d = E // H
    if use_separate_proj_weight:
        wq, wk, wv = q_proj_weight, k_proj_weight, v_proj_weight
    else:
        wq, wk, wv = (ctx.apply(operator.getitem, in_proj_weight, slice(i * E, (i + 1) * E)) for i in range(3))
    if in_proj_bias is not None:
        bq, bk, bv = (ctx.apply(operator.getitem, in_proj_bias, slice(i * E, (i + 1) * E)) for i in range(3))
    else:
        bq = bk = bv = None
    base = ctx.path or "attn"
    q = ctx.apply(F.linear, query, wq, bq, _as=f"{base}.q")
    k = ctx.apply(F.linear, key, wk, bk, _as=f"{base}.k")
    v = ctx.apply(F.linear, value, wv, bv, _as=f"{base}.v")
    tok = 0  # layout (L, N, E) or (L, E)
    if bias_k is not None:
        n = query.shape[1] if batched else None
        bk_t = (ctx.apply(torch.Tensor.repeat, bias_k, 1, n, 1) if batched
                else ctx.apply(torch.Tensor.reshape, bias_k, (1, E)))
        bv_t = (ctx.apply(torch.Tensor.repeat, bias_v, 1, n, 1) if batched
                else ctx.apply(torch.Tensor.reshape, bias_v, (1, E)))
        k = ctx.apply(torch.cat, [k, bk_t], tok)
        v = ctx.apply(torch.cat, [v, bv_t], tok)
    if add_zero_attn:
        zk = ATensor(torch.zeros_like(k.value[:1]), [None] * k.value.dim())
        k = ctx.apply(torch.cat, [k, zk], tok)
        v = ctx.apply(torch.cat, [v, ATensor(torch.zeros_like(v.value[:1]), [None] * v.value.dim())], tok)

    def heads(t: ATensor) -> ATensor:
        if batched:  # (L, N, E) -> (N, H, L, d)
            L, N = t.shape[0], t.shape[1]
            t = ctx.apply(torch.Tensor.reshape, t, (L, N, H, d))
            return ctx.apply(torch.Tensor.permute, t, (1, 2, 0, 3))
        L = t.shape[0]
        t = ctx.apply(torch.Tensor.reshape, t, (L, H, d))
        return ctx.apply(torch.Tensor.permute, t, (1, 0, 2))

    q4, k4, v4 = heads(q), heads(k), heads(v)
    o = ctx.apply(F.scaled_dot_product_attention, q4, k4, v4, None, 0.0, bool(is_causal))
    if batched:
        o = ctx.apply(torch.Tensor.permute, o, (2, 0, 1, 3))
        o = ctx.apply(torch.Tensor.reshape, o, (o.shape[0], o.shape[1], E))
    else:
        o = ctx.apply(torch.Tensor.permute, o, (1, 0, 2))
        o = ctx.apply(torch.Tensor.reshape, o, (o.shape[0], E))
    out = ctx.apply(F.linear, o, out_proj_weight, out_proj_bias)
    value_out, weights_out = ctx.out
    result = out.like(value_out)
    if weights_out is None:
        return (result, None)
    wdims = [None] * weights_out.dim()
    if weights_out.dim() == (4 if batched else 3):  # per-head weights keep the head axis
        wdims[1 if batched else 0] = q4.dims[1 if batched else 0]
    return (result, ATensor(weights_out, wdims))
