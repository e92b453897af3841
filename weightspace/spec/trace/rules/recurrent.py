"""Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) and weight reparametrizations.

An RNN layer's hidden units can be permuted as long as every gate block of the input and recurrent
weights (rows ``g*H:(g+1)*H`` for each gate ``g``), the biases, the recurrent weights' columns and the
next layer's input columns move alike. Gates apply sigmoid / tanh, so no scaling survives.
"""
from __future__ import annotations

import torch

from .. import structure as S
from ..context import ATensor, Feat, OpKind, RuleContext, Uniform, rule

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _rows(t: ATensor, g: int, h: int) -> Feat:
    lab = t.dims[0]
    return Feat(lab.space, lab.start + g * h, h)


@rule("lstm", "gru", "rnn_tanh", "rnn_relu")
def _rnn(ctx: RuleContext, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first=None):
    if train and dropout and num_layers > 1:
        ctx.random_draw()  # dropout between layers in training mode
    if not isinstance(x, ATensor) or not isinstance(params, (list, tuple)) or batch_first is None:
        ctx.fail("packed sequences (use padded tensors to trace recurrent layers)")
    mode = ctx.opname
    gates = _GATES[mode]
    per = 4 if has_biases else 2
    dirs = 2 if bidirectional else 1
    if len(params) != num_layers * dirs * per:
        ctx.fail("recurrent layers with projections (proj_size) are not supported")
    inp = ctx.site_feat(x, x.value.dim() - 1)
    base = ctx.path or mode
    hidden_sites = []
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            chunk = params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
            w_ih, w_hh = chunk[0], chunk[1]
            b_ih, b_hh = (chunk[2], chunk[3]) if has_biases else (None, None)
            h = w_hh.shape[1]
            name = f"{base}.l{layer}" + ("_reverse" if d else "")
            site = ctx.new_site(h, name, diag=S.fixed(h))
            hf = Feat(site, 0, h)
            for g in range(gates):
                for t in (w_ih, w_hh, b_ih, b_hh):
                    if t is not None:
                        ctx.unify(_rows(t, g, h), hf)
            ctx.unify(w_ih.dims[1], inp)
            ctx.unify(w_hh.dims[1], hf)
            uses = [ctx.use("weight_ih", w_ih, ["out", "in"]), ctx.use("weight_hh", w_hh, ["out", "in"])]
            if has_biases:
                uses += [ctx.use("bias_ih", b_ih, ["out"]), ctx.use("bias_hh", b_hh, ["out"])]
            ctx.record(OpKind.RECURRENT, [inp], site, uses, {"mode": mode, "gates": gates, "reverse": bool(d)},
                       name=name)
            outs.append(site)
        hidden_sites.extend(outs)
        if dirs == 1:
            inp = Feat(outs[0], 0, outs[0].size)
        else:
            var = S.concat([o.var for o in outs])
            both = ctx.new_site(var.size, f"{base}.l{layer}.both", var=var, diag=S.fixed(var.size))
            ctx.record(OpKind.CONCAT, [Feat(o, 0, o.size) for o in outs], both)
            inp = Feat(both, 0, both.size)
    _initial_state(ctx, hx, hidden_sites)
    out_val, *state_vals = ctx.out
    dims = list(x.dims[:-1]) + [inp]
    output = ATensor(out_val, dims, held=inp)
    states = tuple(_stacked(ctx, v, hidden_sites, f"{base}.state{i}") for i, v in enumerate(state_vals))
    return (output,) + states


def _initial_state(ctx: RuleContext, hx, sites) -> None:
    """Initial states that vary across hidden units (inputs, constants) pin them; zeros do not."""
    for t in (hx if isinstance(hx, (list, tuple)) else [hx]):
        if isinstance(t, ATensor) and not isinstance(t.dims[-1], Uniform) and t.shape[-1] > 1:
            if isinstance(t.dims[-1], Feat):
                ctx.fail("initial states computed from hidden features")
            for s in sites:
                S.fix(s.var)


def _stacked(ctx: RuleContext, value: torch.Tensor, sites, name: str) -> ATensor:
    """``[layers * directions, batch, H]`` final states: a stack of the layers' hidden sites."""
    h = sites[0].size
    if any(s.size != h for s in sites):
        return ATensor(value, [None] * value.dim())
    var = S.concat([s.var for s in sites])
    stack = ctx.new_site(var.size, name, var=var, diag=S.fixed(var.size))
    ctx.record(OpKind.CONCAT, [Feat(s, 0, s.size) for s in sites], stack, attrs={"axis": 0})
    n = len(sites)
    dims = [Feat(stack, 0, stack.size, (("o", n, h),))] + [None] * (value.dim() - 2) + \
           [Feat(stack, 0, stack.size, (("i", n, h),))]
    return ATensor(value, dims, held=Feat(stack, 0, stack.size))


@rule("_weight_norm", "norm_except_dim")
def _weight_norm(ctx: RuleContext, v, g=None, dim=0):
    """``v * (g / ||v||)`` with the norm over every axis but ``dim``: a weight computed from ``v``
    and ``g``, permuted along with them."""
    if ctx.opname == "norm_except_dim":
        return ATensor(ctx.out, [v.dims[k] if ctx.out.shape[k] == v.shape[k] and k == dim else None
                                 for k in range(ctx.out.dim())])
    d = dim if dim >= 0 else dim + v.value.dim()
    if isinstance(g, ATensor) and g.shape[d] > 1:
        ctx.unify(g.dims[d], v.dims[d])
    return ATensor(ctx.out, list(v.dims))
