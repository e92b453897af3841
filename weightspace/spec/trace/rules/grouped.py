"""The output of grouped-query attention (shared by ``F.scaled_dot_product_attention(...,
enable_gqa=True)`` and by hand-written attention over key / value heads repeated with ``expand`` +
``reshape`` or ``repeat_interleave``, as ``transformers``' ``repeat_kv`` does).

``H`` query heads read ``Hk`` key / value heads, ``r = H / Hk`` query heads per group. The output
has ``H`` heads of the value's width: a new site whose heads move with the query heads (which
nest inside the key / value heads), and whose within-head order is pinned, because one value head
feeds ``r`` output heads and a within-head permutation would have to be the same on all of them
(a layout cannot say that across two axes of different head counts). The same output serves
values that are a within-head slice of a fused per-head q/k/v projection (GPT-NeoX): their site is
the whole projection, so the output cannot be one of its stretches.
"""
from __future__ import annotations

from .. import structure as S
from ..context import ATensor, Feat, OpKind, RuleContext

WHY = ("the attention output's heads are not the value's neurons one to one (grouped-query attention "
       "shares a value head among several query heads; or the values are a slice of a fused per-head "
       "projection), so the within-head orders are pinned; heads still move")


def is_grouped(q_heads, heads: int, v: ATensor, head_dim: int) -> bool:
    """Whether attention with ``heads`` query heads (labelled ``q_heads``) reads fewer value heads:
    the value's neurons are fewer than the output's."""
    return (isinstance(q_heads, Feat) and bool(q_heads.path) and q_heads.path[-1][0] == "o"
            and v.held is not None and heads * head_dim != v.held.length)


def grouped_output(ctx: RuleContext, qk: tuple, v: ATensor, v_within, q_heads, heads: int, head_dim: int,
                   lead: list, query_dim, attrs: dict) -> ATensor:
    """``lead`` + (heads, queries, head_dim) labels of the attention output ``ctx.out``; ``v_within``
    labels the value's within-head dim, ``q_heads`` the query heads, ``query_dim`` the queries."""
    ctx.pin(v_within, WHY)
    var = S.leaf(heads * head_dim, "attention")
    w = ctx.guard(S.split, var, heads, head_dim)
    S.fix(w.inner)
    ctx.guard(S.unify, w.outer, ctx.resolve(q_heads) if isinstance(q_heads, Feat) else S.fixed(heads))
    name = f"{ctx.path}.attention" if ctx.path else "attention"
    site = ctx.new_site(heads * head_dim, name, var=var, diag=S.fixed(heads * head_dim))
    ctx.break_diag(v.held)
    ctx.absorb(v)
    ctx.record(OpKind.ATTENTION, [qk[0], qk[1], v.held], site, attrs={"heads": heads, "head_dim": head_dim, **attrs})
    n = heads * head_dim
    dims = list(lead) + [Feat(site, 0, n, (("o", heads, head_dim),)), query_dim,
                         Feat(site, 0, n, (("i", heads, head_dim),))]
    return ATensor(ctx.out, dims, held=Feat(site, 0, n))
