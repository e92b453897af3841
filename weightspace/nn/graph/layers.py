"""Message-passing layers on parameter graphs.

Every layer maps ``(h [N, H], e [M, H], edge_index [2, M]) -> (h', e')`` and updates both node and
edge states (Neural Graphs and Graph Metanetworks both update edges: the weights are on the edges).
Messages flow along each edge in both directions with separate functions, so a neuron hears from
the neurons it reads and the neurons reading it.

Design decisions:

* An MLP on the concatenation ``[h_i, h_j, e_ij]`` is computed as ``A h_i + B h_j + C e_ij``: the
  node projections are taken once per node ([N, H] matmuls) and gathered, never per edge, which
  is the bulk of the speed on large graphs.
* :class:`NGGNNLayer` (Neural Graphs' NG-GNN) aggregates with PNA's mean / min / max / std and the
  identity and logarithmic-degree amplification scalers (``log(deg + 1)``; PNA divides by the
  training set's mean log-degree, which the learned update absorbs), by reductions over blocks of
  receivers of equal in-degree (:func:`~.fused.block_aggregate`) rather than PyG's scatter-based
  aggregation (``scatter_reduce`` / ``segment_reduce`` min / max are 10-40x slower on CPU).
  :class:`GMNLayer` (Graph Metanetworks) is the edge-centric graph-network block: edges first,
  nodes take the mean of their updated in- and out-edges. :class:`RelationalAttention` (NG-T) is
  sparse attention over the graph's edges: see its docstring.
* Every per-edge MLP (NG-GNN's messages, all edge updates) runs in chunks of edges and is recomputed
  in the backward pass (:mod:`.fused`; :class:`GraphPlans` once per graph): at batch 256 an
  ``[M, H]`` tensor is tens of MB, and faulting fresh ones in from the OS cost as much as the
  arithmetic. A layer allocates one ``[M, H]`` tensor forward (its new edge states) and keeps none.
* :class:`GMNLayer` and :class:`RelationalAttention` are ``torch_geometric.nn.MessagePassing``
  layers (mean aggregation; ``torch_geometric.utils.softmax``).
* LayerNorm on nodes and edges (per element; never across graphs, so each graph of a batch is
  processed exactly as alone, and nothing depends on the batch composition).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from .fused import ChunkPlan, EdgeUpdate, MessageAggregate, chunk_size, edge_chunks


class _PairMLP(nn.Module):
    """``MLP([h_i, h_j, e_ij])`` for every edge, as ``W2 act(A h_i + B h_j + C e_ij)``; ``h_i`` is the
    state of the receiver, ``h_j`` of the sender. Never materialized per edge: :meth:`aggregate_pass` and
    :meth:`update` run it in chunks of edges (:mod:`.fused`), keeping no per-edge tensor for the
    backward pass."""

    def __init__(self, hidden: int, out: int | None = None):
        super().__init__()
        self.nodes = nn.Linear(hidden, 2 * hidden, bias=False)
        self.edges = nn.Linear(hidden, hidden)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, out or hidden))

    def _params(self) -> tuple[torch.Tensor, ...]:
        return self.edges.weight, self.edges.bias, self.out[1].weight, self.out[1].bias

    def aggregate_pass(self, h: torch.Tensor, plan: ChunkPlan, aggregators: Sequence[str]) -> tuple:
        """The pass (:func:`~.fused.edge_chunks`) of the messages along ``plan`` (``reduce="nodes"``;
        receiver ``i``), aggregated per receiver -> ``[N, len(aggregators) * out]`` (0 for receivers
        without edges)."""
        a, b = self.nodes(h).chunk(2, -1)
        return plan, MessageAggregate(aggregators), len(aggregators) * self.out[1].out_features, a, b, self._params()

    def update(self, h: torch.Tensor, e: torch.Tensor, plan: ChunkPlan, norm: nn.LayerNorm) -> torch.Tensor:
        """``norm(e + MLP(h_recv, h_send, e))`` along ``plan`` (``reduce="edges"``), in chunks."""
        a, b = self.nodes(h).chunk(2, -1)
        (out,) = edge_chunks(e, (plan, EdgeUpdate(norm.eps), e.shape[-1], a, b, (*self._params(), norm.weight,
                                                                               norm.bias)))
        return out


class GraphPlans(NamedTuple):
    """A graph's chunk plans, computed once per graph and shared by all layers: messages along the
    edges, against them, and per-edge updates (:class:`~.fused.ChunkPlan`)."""

    forward: ChunkPlan
    backward: ChunkPlan
    edges: ChunkPlan

    @classmethod
    @torch.compiler.disable
    def of(cls, edge_index: torch.Tensor, num_nodes: int, hidden: int, dtype: torch.dtype) -> "GraphPlans":
        chunk = chunk_size(hidden, dtype.itemsize, edge_index.device)
        return cls(ChunkPlan.nodes(edge_index, num_nodes, chunk), ChunkPlan.nodes(edge_index, num_nodes, chunk, True),
                   ChunkPlan.edges(edge_index, chunk))


class NGGNNLayer(nn.Module):
    """PNA-style layer with edge updates (NG-GNN).

    ``m_{j->i} = MLP_fwd(h_i, h_j, e_ji)`` along edges and ``MLP_bwd`` against them; each node
    aggregates both with ``aggregators`` x scalers (identity, ``log(deg + 1)``), then
    ``h' = LN(h + MLP(h, aggregates))`` and ``e' = LN(e + MLP(h'_dst, h'_src, e))``.

    Aggregation is over blocks of receivers of equal in-degree, their messages computed chunk by
    chunk and recomputed in the backward pass (:class:`GraphPlans`, computed once per graph and
    shared by all layers; :mod:`.fused`)."""

    def __init__(self, hidden: int, aggregators: Sequence[str] = ("mean", "min", "max", "std"),
                 edge_update: bool = True):
        super().__init__()
        self.aggregators = MessageAggregate(aggregators).aggregators        # checked here, not at first use
        self.msg = nn.ModuleList([_PairMLP(hidden), _PairMLP(hidden)])
        width = hidden * (1 + 2 * 2 * len(self.aggregators))
        self.update_mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.node_norm = nn.LayerNorm(hidden)
        self.edge_mlp = _PairMLP(hidden) if edge_update else None
        self.edge_norm = nn.LayerNorm(hidden) if edge_update else None

    def forward(self, h: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor,
                plans: GraphPlans | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if plans is None:
            plans = GraphPlans.of(edge_index, h.shape[0], h.shape[-1], h.dtype)
        # update_mlp's first Linear on [h, agg_f, s_f agg_f, agg_b, s_b agg_b] (s: the amplification
        # scaler, one number per node), taken part by part: (s agg) W^T = s (agg W^T), and the
        # [N, 17 H] concatenation (37 MB at batch 256, faulted in fresh every layer) never exists
        first = self.update_mlp[0]
        hidden = h.shape[-1]
        width = hidden * len(self.aggregators)
        w_h, *w_dirs = first.weight.split([hidden] + [2 * width] * 2, -1)
        x = F.linear(h, w_h, first.bias)
        passes = [mlp.aggregate_pass(h, plan, self.aggregators) for mlp, plan in zip(self.msg, plans[:2])]
        aggs = edge_chunks(e, *passes)                # both directions: one [M, H] gradient for e
        for agg, plan, w in zip(aggs, plans[:2], w_dirs):
            plain, scaled = F.linear(agg, torch.cat(w.split(width, -1))).chunk(2, -1)
            x = x + plain + scaled * torch.log1p(plan.lengths.to(h.dtype)).unsqueeze(-1)
        h = self.node_norm(h + self.update_mlp[1:](x))
        if self.edge_mlp is not None:
            e = self.edge_mlp.update(h, e, plans.edges, self.edge_norm)
        return h, e


class GMNLayer(MessagePassing):
    """Graph Metanetworks' edge-centric block: ``e' = LN(e + MLP(h_dst, h_src, e))``, then
    ``h' = LN(h + MLP(h, mean_in(e'), mean_out(e')))`` (mean over a node's incoming / outgoing edges)."""

    def __init__(self, hidden: int):
        super().__init__(aggr="mean", node_dim=0)
        self.edge_mlp = _PairMLP(hidden)
        self.edge_norm = nn.LayerNorm(hidden)
        self.node_mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.node_norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = h.shape[0]
        e = self.edge_mlp.update(h, e, ChunkPlan.edges(edge_index, chunk_size(h.shape[-1], h.dtype.itemsize, h.device)),
                                 self.edge_norm)
        incoming = self.propagate(edge_index, m=e, size=(n, n))
        outgoing = self.propagate(edge_index.flip(0), m=e, size=(n, n))
        h = self.node_norm(h + self.node_mlp(torch.cat([h, incoming, outgoing], -1)))
        return h, e

    def message(self, m: torch.Tensor) -> torch.Tensor:
        return m


class RelationalAttention(MessagePassing):
    """NG-T's relational-transformer layer, as sparse attention over the parameter graph.

    A node attends to the nodes it shares an edge with (both directions, separate edge projections)
    and to itself; keys and values are the neighbour's plus the edge's:
    ``score = <q_i, k_j + K_dir e_ij> / sqrt(d)``, ``value = v_j + V_dir e_ij``, normalized with
    ``torch_geometric.utils.softmax`` over each receiver's relations, per head. Memory is
    ``O((2M + N) * hidden)``: never a dense ``N x N`` tensor. The parameter graph has all the
    relations that carry information (the weights are its edges); dense attention over a batch of
    256 SIRENs (17k nodes) would need an ``N x N`` score per graph and head for nothing but zeros.
    Then ``h = LN(h + O(attn))``, ``h = LN(h + FFN(h))`` and the edges are updated as in NG-GNN."""

    def __init__(self, hidden: int, heads: int = 8, edge_update: bool = True):
        super().__init__(aggr="sum", node_dim=0)
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.hidden, self.heads, self.dim = hidden, heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.edge_kv = nn.Linear(hidden, 4 * hidden)          # key and value offsets, per direction
        self.self_kv = nn.Parameter(torch.zeros(2, hidden))   # the relation of a node to itself
        self.o = nn.Linear(hidden, hidden)
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
        self.edge_mlp = _PairMLP(hidden) if edge_update else None
        self.edge_norm = nn.LayerNorm(hidden) if edge_update else None

    def forward(self, h: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, hd, d = h.shape[0], self.heads, self.dim
        q, k, v = self.qkv(h).chunk(3, -1)
        ek_f, ev_f, ek_b, ev_b = self.edge_kv(e).chunk(4, -1)
        src, dst = edge_index
        loops = torch.arange(n, device=h.device)
        recv = torch.cat([dst, src, loops])                   # relations: forward, backward, self
        send = torch.cat([src, dst, loops])
        k_off = torch.cat([ek_f, ek_b, self.self_kv[0].expand(n, -1)])
        v_off = torch.cat([ev_f, ev_b, self.self_kv[1].expand(n, -1)])
        out = self.propagate(torch.stack([send, recv]), q=q.view(n, hd, d), k=k.view(n, hd, d), v=v.view(n, hd, d),
                             k_off=k_off.view(-1, hd, d), v_off=v_off.view(-1, hd, d), size=(n, n))
        h = self.norm1(h + self.o(out.reshape(n, self.hidden)))
        h = self.norm2(h + self.ffn(h))
        if self.edge_mlp is not None:
            chunks = ChunkPlan.edges(edge_index, chunk_size(self.hidden, h.dtype.itemsize, h.device))
            e = self.edge_mlp.update(h, e, chunks, self.edge_norm)
        return h, e

    def message(self, q_i, k_j, v_j, k_off, v_off, index, size_i):
        score = (q_i * (k_j + k_off)).sum(-1) / math.sqrt(self.dim)       # [R, heads]
        alpha = softmax(score, index, num_nodes=size_i)
        return alpha.unsqueeze(-1) * (v_j + v_off)
