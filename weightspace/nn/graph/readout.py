"""Heads of the graph metanetworks.

* :class:`InvariantReadout`: per graph, the mean and max of the node states and the mean of the
  edge states, then an MLP -> ``[B, K]``. Pooling is per graph (``batch.batch``), so each member of
  a (mixed) batch gets the output it gets alone; sums over a graph's nodes are invariant to any
  relabeling of them.
* :class:`EquivariantHead`: a linear map per node and per edge back to the graph's feature slots
  (``x [N, Fn]``, ``edge_attr [M, Fe]``); ``ws.from_graph`` then reads the slots back into weights
  with the graph's inverse gather. Since node ``i`` of a permuted network's graph is node ``index[i]``
  of the original (``ws.node_permutation``) and the layers are equivariant to node relabelings, the
  weights read back are the original output permuted the same way. Weights no op of the dataflow
  describes (the graph's ``extra``) get zero outputs; plain buffers are carried over.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch_geometric.utils import scatter

from .encode import LazyOutLinear


def graph_index(graph) -> tuple[torch.Tensor, int]:
    """``(batch [N], number of graphs)`` of a Batch, or of a single Data (all zeros, 1)."""
    batch = getattr(graph, "batch", None)
    if batch is None:
        return torch.zeros(graph.num_nodes, dtype=torch.long, device=graph.x.device), 1
    return batch, int(graph.num_graphs)


class InvariantReadout(nn.Module):
    """``(h [N, H], e [M, H], graph) -> [B, out_features]``."""

    def __init__(self, hidden: int, out_features: int, head_hidden: int | None = None):
        super().__init__()
        head_hidden = head_hidden or 2 * hidden
        self.mlp = nn.Sequential(nn.Linear(3 * hidden, head_hidden), nn.SiLU(), nn.Linear(head_hidden, out_features))

    def forward(self, h: torch.Tensor, e: torch.Tensor, graph) -> torch.Tensor:
        batch, b = graph_index(graph)
        edge_batch = batch.index_select(0, graph.edge_index[0])
        pooled = torch.cat([scatter(h, batch, 0, dim_size=b, reduce="mean"),
                            scatter(h, batch, 0, dim_size=b, reduce="max"),
                            scatter(e, edge_batch, 0, dim_size=b, reduce="mean")], -1)
        return self.mlp(pooled)


class EquivariantHead(nn.Module):
    """``(h, e, graph) -> graph'``: a shallow copy of ``graph`` whose ``x`` and ``edge_attr`` are
    the per-node and per-edge outputs (as many slots as the graph has; the widths are fixed on the
    first batch, as the encoders' input widths are) and whose ``extra`` is zero."""

    def __init__(self, hidden: int):
        super().__init__()
        self.node_out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU())
        self.edge_out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU())
        self.node_slots = LazyOutLinear(hidden)
        self.edge_slots = LazyOutLinear(hidden)

    def forward(self, h: torch.Tensor, e: torch.Tensor, graph):
        out = copy.copy(graph)
        out.x = self.node_slots(self.node_out(h), graph.x.shape[1])
        out.edge_attr = self.edge_slots(self.edge_out(e), graph.edge_attr.shape[1])
        extra = getattr(graph, "extra", None)
        if extra is not None:
            out.extra = torch.zeros(extra.shape, dtype=h.dtype, device=h.device)
        return out
