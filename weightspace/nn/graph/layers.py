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
  training set's mean log-degree, which the learned update absorbs), by CSR segment reductions
  (:class:`Adjacency`, :func:`segment_aggregate`) rather than PyG's scatter-based aggregation.
  :class:`GMNLayer` (Graph Metanetworks) is the edge-centric graph-network block: edges first,
  nodes take the mean of their updated in- and out-edges. :class:`RelationalAttention` (NG-T) is
  sparse attention over the graph's edges: see its docstring.
* :class:`GMNLayer` and :class:`RelationalAttention` are ``torch_geometric.nn.MessagePassing``
  layers (mean aggregation; ``torch_geometric.utils.softmax``).
* On CPU, at batch 256 the ``[M, H]`` edge tensors are tens of MB: allocating them (page faults)
  costs as much as computing them, so sums into fresh tensors are done in place where autograd allows.
* LayerNorm on nodes and edges (per element; never across graphs, so each graph of a batch is
  processed exactly as alone, and nothing depends on the batch composition).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax


class _PairMLP(nn.Module):
    """``MLP([h_i, h_j, e_ij])`` for every edge, as ``W2 act(A h_i + B h_j + C e_ij)``; ``h_i`` is the
    state of ``index_i`` (the receiver), ``h_j`` of ``index_j``."""

    def __init__(self, hidden: int, out: int | None = None):
        super().__init__()
        self.nodes = nn.Linear(hidden, 2 * hidden, bias=False)
        self.edges = nn.Linear(hidden, hidden)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, out or hidden))

    def forward(self, h: torch.Tensor, e: torch.Tensor, index_i: torch.Tensor, index_j: torch.Tensor) -> torch.Tensor:
        a, b = self.nodes(h).chunk(2, -1)
        x = self.edges(e)                # in place below: fewer [M, H] allocations (addmm keeps no output)
        return self.out(x.add_(a.index_select(0, index_i)).add_(b.index_select(0, index_j)))


class Adjacency(NamedTuple):
    """One direction of a graph's edges in CSR order: edge ``k`` of the sorted list goes from
    ``send[k]`` to ``recv[k]`` (``recv`` non-decreasing); ``order`` maps sorted positions to the
    original edges (None when they were sorted already); ``lengths [N]`` counts each node's edges."""

    send: torch.Tensor
    recv: torch.Tensor
    order: torch.Tensor | None
    lengths: torch.Tensor

    @classmethod
    def of(cls, edge_index: torch.Tensor, num_nodes: int, reverse: bool = False) -> "Adjacency":
        send, recv = (edge_index[1], edge_index[0]) if reverse else (edge_index[0], edge_index[1])
        order = None
        if recv.numel() > 1 and not bool((recv[1:] >= recv[:-1]).all()):
            order = torch.argsort(recv, stable=True)
            send, recv = send[order], recv[order]
        return cls(send, recv, order, torch.bincount(recv, minlength=num_nodes))

    def edges(self, e: torch.Tensor) -> torch.Tensor:
        """Edge states in this direction's sorted order."""
        return e if self.order is None else e.index_select(0, self.order)


def segment_aggregate(msg: torch.Tensor, lengths: torch.Tensor, aggregators: Sequence[str]) -> torch.Tensor:
    """``[M, H]`` messages sorted by receiver -> ``[N, A * H]``: each aggregator over each receiver's
    messages (``torch.segment_reduce``; 0 for nodes without messages). ``std`` is
    ``sqrt(max(E[m^2] - E[m]^2, 0) + 1e-5)`` as in PyG's ``StdAggregation``."""
    empty = (lengths == 0).unsqueeze(-1)
    count = lengths.clamp_min(1).unsqueeze(-1).to(msg.dtype)
    cache: dict[str, torch.Tensor] = {}

    def mean():
        if "mean" not in cache:
            cache["mean"] = torch.segment_reduce(msg, "sum", lengths=lengths, unsafe=True) / count
        return cache["mean"]

    out = []
    for a in aggregators:
        if a == "mean":
            out.append(mean())
        elif a == "sum":
            out.append(torch.segment_reduce(msg, "sum", lengths=lengths, unsafe=True))
        elif a in ("max", "min"):
            r = torch.segment_reduce(msg, a, lengths=lengths, unsafe=True)
            out.append(torch.where(empty, torch.zeros((), dtype=msg.dtype), r))
        elif a in ("std", "var"):
            sq = torch.segment_reduce(msg.square(), "sum", lengths=lengths, unsafe=True) / count
            var = (sq - mean().square()).clamp_min(0)
            out.append(var if a == "var" else (var + 1e-5).sqrt().masked_fill(empty, 0))
        else:
            raise ValueError(f"unknown aggregator {a!r} (mean, sum, min, max, std, var)")
    return torch.cat(out, -1)


class NGGNNLayer(nn.Module):
    """PNA-style layer with edge updates (NG-GNN).

    ``m_{j->i} = MLP_fwd(h_i, h_j, e_ji)`` along edges and ``MLP_bwd`` against them; each node
    aggregates both with ``aggregators`` x scalers (identity, ``log(deg + 1)``), then
    ``h' = LN(h + MLP(h, aggregates))`` and ``e' = LN(e + MLP(h'_dst, h'_src, e))``.

    Aggregation is by CSR segment reductions over receiver-sorted messages (:class:`Adjacency`,
    computed once per graph and shared by all layers) rather than PyG's scatter-based aggregation
    modules: min / max / std by ``scatter_reduce`` cost 2-3x more, forward and backward, on CPU."""

    def __init__(self, hidden: int, aggregators: Sequence[str] = ("mean", "min", "max", "std"),
                 edge_update: bool = True):
        super().__init__()
        self.aggregators = tuple(aggregators)
        self.msg = nn.ModuleList([_PairMLP(hidden), _PairMLP(hidden)])
        width = hidden * (1 + 2 * 2 * len(self.aggregators))
        self.update_mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.node_norm = nn.LayerNorm(hidden)
        self.edge_mlp = _PairMLP(hidden) if edge_update else None
        self.edge_norm = nn.LayerNorm(hidden) if edge_update else None

    def forward(self, h: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor,
                adjacency: tuple[Adjacency, Adjacency] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = h.shape[0]
        if adjacency is None:
            adjacency = (Adjacency.of(edge_index, n), Adjacency.of(edge_index, n, reverse=True))
        parts = [h]
        for mlp, adj in zip(self.msg, adjacency):
            msg = mlp(h, adj.edges(e), adj.recv, adj.send)
            agg = segment_aggregate(msg, adj.lengths, self.aggregators)
            parts += [agg, agg * torch.log1p(adj.lengths.to(h.dtype)).unsqueeze(-1)]
        h = self.node_norm(h + self.update_mlp(torch.cat(parts, -1)))
        if self.edge_mlp is not None:
            e = self.edge_norm(e + self.edge_mlp(h, e, edge_index[1], edge_index[0]))
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
        e = self.edge_norm(e + self.edge_mlp(h, e, edge_index[1], edge_index[0]))
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
            e = self.edge_norm(e + self.edge_mlp(h, e, dst, src))
        return h, e

    def message(self, q_i, k_j, v_j, k_off, v_off, index, size_i):
        score = (q_i * (k_j + k_off)).sum(-1) / math.sqrt(self.dim)       # [R, heads]
        alpha = softmax(score, index, num_nodes=size_i)
        return alpha.unsqueeze(-1) * (v_j + v_off)
