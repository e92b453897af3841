"""Parameter graphs of grouped-query and multi-query attention (issue 20).

One head node per QUERY head, fed by that head's query neurons and by the key neurons of the key /
value head its group reads; the value neurons of a key / value head feed (identity edges) the output
neurons of every query head in its group. Checked on hand-written attention in every form the tracer
knows (``enable_gqa=True``, ``repeat_kv``-style ``expand`` + ``reshape``, tiling with ``repeat``, a
hand-written softmax(q k^T) v), over random head counts, and on a small ``transformers`` Llama:
the structure the rule asks for, equivariance (the graph of permuted weights is the relabeled
graph), the exact inverse, and a graph metanetwork's invariance on these graphs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
from weightspace.graph.plan import graph_plan
from weightspace.graph.vocab import EDGE, NODE
from weightspace.nn.graph import GMN
from weightspace.testing import assert_invariant

torch.set_num_threads(1)
MODES = ("enable_gqa", "repeat_kv", "tile", "manual")


class Block(nn.Module):
    """Attention with ``heads`` query heads reading ``kv_heads`` key / value heads, plus a residual."""

    def __init__(self, mode: str, width: int, heads: int, kv_heads: int, head_dim: int, value_dim: int | None = None):
        super().__init__()
        self.mode, self.h, self.hk, self.d, self.dv = mode, heads, kv_heads, head_dim, value_dim or head_dim
        self.q = nn.Linear(width, heads * head_dim)
        self.k = nn.Linear(width, kv_heads * head_dim)
        self.v = nn.Linear(width, kv_heads * self.dv)
        self.o = nn.Linear(heads * self.dv, width)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k(x).view(b, t, self.hk, self.d).transpose(1, 2)
        v = self.v(x).view(b, t, self.hk, self.dv).transpose(1, 2)
        r = self.h // self.hk
        if self.mode == "enable_gqa":
            a = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        else:
            if self.mode == "tile":                    # query head i reads key / value head i % kv_heads
                k, v = k.repeat(1, r, 1, 1), v.repeat(1, r, 1, 1)
            else:                                      # transformers' repeat_kv: head i reads head i // r
                k = k[:, :, None].expand(b, self.hk, r, t, self.d).reshape(b, self.h, t, self.d)
                v = v[:, :, None].expand(b, self.hk, r, t, self.dv).reshape(b, self.h, t, self.dv)
            if self.mode == "manual":
                a = torch.softmax(q @ k.transpose(-1, -2) / self.d ** 0.5, -1) @ v
            else:
                a = F.scaled_dot_product_attention(q, k, v)
        return x + self.o(a.transpose(1, 2).reshape(b, t, self.h * self.dv))


class Net(nn.Module):
    def __init__(self, mode="enable_gqa", heads=4, kv_heads=2, head_dim=3, layers=2, width=8, value_dim=None):
        super().__init__()
        self.emb = nn.Linear(3, width)
        self.blocks = nn.Sequential(*[Block(mode, width, heads, kv_heads, head_dim, value_dim) for _ in range(layers)])
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        return self.out(torch.relu(self.blocks(self.emb(x))))


def _trace(model, x):
    model = model.double().eval()
    return model, ws.WeightSpaceSpec.from_module(model, x)


def _sorted_edges(index, g):
    t = torch.cat([index.T.double(), g.edge_type[:, None].double(), g.edge_attr.double()], 1)
    return t[torch.from_numpy(np.lexsort(t.numpy().T[::-1]).copy())]


def check_heads(spec, heads: int, kv_heads: int, layers: int, kv_of) -> None:
    """The graph's attention edges are exactly what the rule says; ``kv_of(h)``: the key / value head
    query head ``h`` reads (known from how the model was written)."""
    plan = graph_plan(spec)
    g = ws.to_graph(ws.WeightSpace.from_state_dicts([{n: torch.zeros(spec[n].shape) for n in spec.names}], spec))
    head_nodes = (g.node_type == NODE["head"]).nonzero().flatten()
    assert head_nodes.numel() == heads * layers
    ops = [op for op in spec.dataflow.ops if op.kind == "attention"]
    assert len(ops) == layers
    src, dst = g.edge_index
    for op, first in zip(ops, head_nodes[::heads].tolist()):
        q, k, v = op.inputs
        dq, dk, dv = q.length // heads, k.length // kv_heads, v.length // kv_heads
        assert k.length == kv_heads * dk and spec.dataflow.site(op.output).size == heads * dv
        base = {s: int(plan.site_offset[s]) for s in (q.site, k.site, v.site, op.output)}

        def edges(kind, node=None, into=True):
            m = g.edge_type == EDGE[kind]
            if node is not None:
                m &= (dst if into else src) == node
            return src[m], dst[m]

        for h in range(heads):
            kv = kv_of(h)
            qs, _ = edges("attn_query", first + h)
            q0 = base[q.site] + q.start
            assert sorted(qs.tolist()) == list(range(q0 + h * dq, q0 + (h + 1) * dq))
            ks, _ = edges("attn_key", first + h)
            assert sorted(ks.tolist()) == list(range(base[k.site] + k.start + kv * dk,
                                                     base[k.site] + k.start + (kv + 1) * dk))
            _, outs = edges("attn_head", first + h, into=False)
            out_h = base[op.output] + h * dv + torch.arange(dv)
            assert torch.equal(outs.sort().values, out_h)
            for j in range(dv):     # one identity edge into each output neuron, from its value neuron
                vs, _ = edges("attn_value", int(out_h[j]))
                assert vs.tolist() == [base[v.site] + v.start + kv * dv + j]
    n_attn = {kind: int((g.edge_type == EDGE[kind]).sum()) for kind in ("attn_query", "attn_key", "attn_value")}
    assert n_attn == {"attn_query": sum(op.inputs[0].length for op in ops),
                      "attn_key": sum(heads * op.inputs[1].length // kv_heads for op in ops),
                      "attn_value": sum(spec.dataflow.site(op.output).size for op in ops)}


def _moving_heads(spec, seed: int):
    """A random permutation of the spec's group that moves some head node (small groups often draw
    one that does not: up to 20 draws) and its node relabeling."""
    heads = graph_plan(spec).nodes.node_type == NODE["head"]
    for s in range(seed, seed + 20):
        perms = ws.random_permutation(spec, generator=torch.Generator().manual_seed(s))
        idx = ws.node_permutation(spec, perms)
        if not torch.equal(idx[heads], heads.nonzero().flatten()):
            return perms, idx
    raise AssertionError("no permutation moved a query head node")


def check_equivariant_and_exact(model, spec, x, seed: int) -> None:
    """A random permutation preserves the function and moves weights; the graph of the permuted
    weights is the graph relabeled by ``node_permutation`` (head nodes included); exact inverse."""
    sd = {n: t.clone() for n, t in model.state_dict().items()}
    perms, idx = _moving_heads(spec, seed)
    moved = ws.permute(sd, spec, perms)
    assert any(not torch.equal(sd[n], moved[n]) for n in spec.weight_names), "the element must move weights"
    x = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        y = model(*x)
        model.load_state_dict(moved)
        y_moved = model(*x)
        model.load_state_dict(sd)
    torch.testing.assert_close(y_moved, y, rtol=1e-9, atol=1e-10)
    a, b = ws.to_graph(sd, spec), ws.to_graph(moved, spec)
    for attr in ("x", "node_type", "layer", "node_pos", "activation"):
        assert torch.equal(getattr(b, attr), getattr(a, attr)[idx]), attr
    inv = torch.empty_like(idx)
    inv[idx] = torch.arange(idx.numel())
    assert torch.equal(_sorted_edges(inv[a.edge_index], a), _sorted_edges(b.edge_index, b))
    back = ws.from_graph(b, spec)
    assert all(torch.equal(back[n][0], moved[n]) for n in spec.names)


@settings(max_examples=12, deadline=None, phases=(Phase.explicit, Phase.generate))
@given(mode=st.sampled_from(MODES), shape=st.sampled_from([(4, 2), (4, 1), (6, 3), (6, 2), (2, 1)]),
       head_dim=st.integers(2, 3), layers=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_grouped_query_attention_graphs(mode, shape, head_dim, layers, seed):
    heads, kv_heads = shape
    torch.manual_seed(seed)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    model, spec = _trace(Net(mode, heads, kv_heads, head_dim, layers), x)
    r = heads // kv_heads
    check_heads(spec, heads, kv_heads, layers, (lambda h: h % kv_heads) if mode == "tile" else (lambda h: h // r))
    check_equivariant_and_exact(model, spec, x, seed)


@pytest.mark.parametrize("mode", ["enable_gqa", "repeat_kv"])
def test_value_heads_of_another_width_than_query_heads(mode):
    """Value heads 4 wide, query / key heads 3 wide: the attention output has the value's head width
    (the tracer once gave it the query's and refused the model)."""
    torch.manual_seed(1)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    model, spec = _trace(Net(mode, 4, 2, 3, 1, value_dim=4), x)
    assert model.blocks[0].o.weight.shape == (8, 16)
    check_equivariant_and_exact(model, spec, x, 0)


@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa", "mqa"])
def test_graph_metanetwork_is_invariant_on_grouped_query_graphs(kv_heads):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    model, spec = _trace(Net("repeat_kv", 4, kv_heads, 3, 2), x)
    nets = [{n: t + 0.1 * torch.randn_like(t) for n, t in model.state_dict().items()} for _ in range(2)]
    space = ws.WeightSpace.from_state_dicts(nets, spec)
    gmn = GMN(hidden=16, layers=2, out_features=3).double()
    report = assert_invariant(gmn, spec, space, kinds=("permutation",), rtol=1e-8)
    assert not report.constant


@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa", "mqa"])
@pytest.mark.parametrize("mode", ["padding", "rotary"])
def test_catalog_attention_with_grouped_heads(mode, kv_heads):
    """The catalog's transformers-style attention (sdpa with a padding mask, rotary) with fewer
    key / value heads than query heads."""
    from architectures import MaskedAttention, _padded
    x, pad = _padded(torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = MaskedAttention(mode, heads=4, kv_heads=kv_heads).double().eval()
    x = x.double()
    spec = ws.WeightSpaceSpec.from_module(model, (x, pad))
    check_heads(spec, 4, kv_heads, 1, lambda h: h // (4 // kv_heads))
    check_equivariant_and_exact(model, spec, (x, pad), 0)


class FusedPerHead(nn.Module):
    """GPT-NeoX's layout: one projection, viewed per head as [q | k | v] and chunked."""

    def __init__(self, width=8, heads=2, head_dim=3):
        super().__init__()
        self.h, self.d = heads, head_dim
        self.emb = nn.Linear(3, width)
        self.qkv = nn.Linear(width, 3 * heads * head_dim)
        self.o = nn.Linear(heads * head_dim, width)
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        h = self.emb(x)
        b, t, _ = h.shape
        q, k, v = self.qkv(h).view(b, t, self.h, 3 * self.d).transpose(1, 2).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, self.h * self.d)
        return self.out(torch.relu(h + self.o(a)))


def test_fused_per_head_projection_feeds_whole_blocks_to_the_head_nodes():
    """The dataflow cannot say which neurons of a head's fused block are values: the whole block
    feeds the head node, which feeds the head's output neurons (no edge leaves its site)."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    model, spec = _trace(FusedPerHead(), x)
    (op,) = [op for op in spec.dataflow.ops if op.kind == "attention"]
    plan = graph_plan(spec)
    g = ws.to_graph(model.state_dict(), spec)
    first = int((g.node_type == NODE["head"]).nonzero()[0])
    src, dst = g.edge_index
    v = op.inputs[2]
    vs = src[g.edge_type == EDGE["attn_value"]]
    vd = dst[g.edge_type == EDGE["attn_value"]]
    assert torch.equal(vs, int(plan.site_offset[v.site]) + torch.arange(18))
    assert torch.equal(vd, first + torch.arange(18) // 9)
    outs = dst[g.edge_type == EDGE["attn_head"]]
    assert torch.equal(outs, int(plan.site_offset[op.output]) + torch.arange(6))
    check_equivariant_and_exact(model, spec, x, 0)


def _llama(kv_heads: int):
    T = pytest.importorskip("transformers")
    cfg = T.LlamaConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=4, num_key_value_heads=kv_heads,
                        intermediate_size=32, vocab_size=50, max_position_embeddings=8)
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(cfg).double().eval()
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    return model, ids, ws.WeightSpaceSpec.from_module(model, ids)


@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa", "mqa"])
def test_transformers_llama_grouped_query_graph(kv_heads):
    model, ids, spec = _llama(kv_heads)
    check_heads(spec, 4, kv_heads, 2, lambda h: h // (4 // kv_heads))          # repeat_kv: consecutive groups
    sd = model.state_dict()
    perms, idx = _moving_heads(spec, 1)
    moved = ws.permute(sd, spec, perms)
    a, b = ws.to_graph(sd, spec), ws.to_graph(moved, spec)
    assert torch.equal(b.x, a.x[idx])
    inv = torch.empty_like(idx)
    inv[idx] = torch.arange(idx.numel())
    assert torch.equal(_sorted_edges(inv[a.edge_index], a), _sorted_edges(b.edge_index, b))
    back = ws.from_graph(a, spec)
    assert all(torch.equal(back[n][0].to(sd[n].dtype), sd[n]) for n in spec.weight_names)
