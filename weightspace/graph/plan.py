"""Index arithmetic of a spec's parameter graph, computed once per spec.

A :class:`GraphPlan` says where every weight of the flat vector (``WeightSpace.flatten()`` order)
goes in the graph: a slot of a node's features, a slot of an edge's features, or the graph-level
``extra`` vector (weights no op of the dataflow describes). Building graphs for a batch is then one
gather per tensor; inverting them is the reverse gather.

What each dataflow op contributes is in :mod:`weightspace.graph.rules`; this module assembles it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..spec.cache import cached
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..spec.types import SiteView
from .rules import OpRules
from .vocab import NODE, activation_code


@dataclass(frozen=True, eq=False)
class NodeAttrs:
    """Categorical per-node attributes, each ``[N]`` (copied onto every graph as is)."""

    node_type: torch.Tensor           # codes of vocab.NODE_TYPES
    layer: torch.Tensor               # depth of the node's site in the dataflow
    node_pos: torch.Tensor            # identity of input / output neurons, -1 for hidden ones
    activation: torch.Tensor          # codes of vocab.ACTIVATIONS
    site: torch.Tensor                # site id (-1 for attention head nodes)


@dataclass(frozen=True, eq=False)
class GraphPlan:
    num_nodes: int
    node_dim: int                     # Fn: width of node features
    edge_dim: int                     # Fe: width of edge features (kernels zero-padded)
    nodes: NodeAttrs
    edge_index: torch.Tensor          # [2, M] (source, target)
    edge_type: torch.Tensor           # [M] codes of vocab.EDGE_TYPES
    edge_len: torch.Tensor            # [M] number of meaningful edge-feature entries (kernel numel)
    x_src: torch.Tensor               # [N * Fn] column of the extended weight vector for each node slot
    e_src: torch.Tensor               # [M * Fe] same for edge slots (see ``extend``)
    constants: torch.Tensor           # values appended to the weight vector by ``extend`` (after a 0)
    extra_cols: torch.Tensor          # weight columns kept as graph-level features
    inv_x_cols: torch.Tensor          # for the inverse: the first placement of each weight in a node
    inv_x_pos: torch.Tensor           # slot (flat position in [N * Fn]) ...
    inv_e_cols: torch.Tensor          # ... or else in an edge slot
    inv_e_pos: torch.Tensor           # (flat position in [M * Fe])
    site_offset: torch.Tensor         # [num_sites] first node of each site
    head_nodes: tuple[tuple[int, int, SiteView], ...]  # per attention op: (first head node, heads, v site view)
    num_weights: int
    buffer_names: tuple[str, ...]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    def extend(self, flat: torch.Tensor) -> torch.Tensor:
        """``[B, P]`` weights -> ``[B, P + 1 + C]``: weights, a zero, the constants. Every node and edge
        slot is then one column of this (``x_src`` / ``e_src``): building features is one gather."""
        b = flat.shape[0]
        tail = torch.cat([flat.new_zeros(1), self.constants.to(flat)])
        return torch.cat([flat, tail.expand(b, -1)], dim=1)


def graph_plan(spec: WeightSpaceSpec) -> GraphPlan:
    """The (cached) graph plan of a spec; the spec must carry a dataflow (traced specs do)."""
    if spec.dataflow is None:
        raise SpecError("this spec has no dataflow (hand-written with from_axes?); parameter graphs are drawn from "
                        "a traced spec: WeightSpaceSpec.from_module(model, example_input) or WeightSpaceSpec.mlp")
    return cached(spec, "graph_plan", lambda: _Builder(spec).build())


class _Builder(OpRules):
    """Applies the op rules to the whole dataflow, then assembles the plan."""

    def build(self) -> GraphPlan:
        for op in self.flow.ops:
            self.apply(op)
        nodes = self._node_attrs()
        n = nodes.node_type.numel()
        src, dst, edge_type, edge_len = (_cat(self.edges, i) for i in range(4))
        for ids, width in self.widths:
            edge_len[ids] = torch.maximum(edge_len[ids], torch.tensor(width))
        fe = max(int(edge_len.max()) if edge_len.numel() else 1, 1)
        e_edge, e_slot, e_cols = (_cat(self.e_place, i) for i in range(3))
        x_node, x_slot, x_cols = (_cat(self.x_place, i) for i in range(3))
        fn = max(int(x_slot.max()) + 1 if x_slot.numel() else 1, 1)
        e_pos, x_pos = e_edge * fe + e_slot, x_node * fn + x_slot
        placed = torch.zeros(self.num_weights, dtype=torch.bool)
        inv_x_cols, inv_x_pos = _first(x_cols, x_pos, placed)
        inv_e_cols, inv_e_pos = _first(e_cols, e_pos, placed)
        # the extended vector: weights (columns < P), a zero (column P), the distinct constants
        p = self.num_weights
        c_edge, c_slot, c_val = _cat(self.consts, 0), _cat(self.consts, 1), _cat(self.consts, 2, torch.float64)
        constants, which = torch.unique(c_val, return_inverse=True)
        e_src = torch.full((src.numel() * fe,), p, dtype=torch.long)
        e_src[c_edge * fe + c_slot] = p + 1 + which
        e_src[e_pos] = e_cols
        x_src = torch.full((n * fn,), p, dtype=torch.long)
        x_src[x_pos] = x_cols
        return GraphPlan(
            num_nodes=n, node_dim=fn, edge_dim=fe, nodes=nodes,
            edge_index=torch.stack([src, dst]), edge_type=edge_type, edge_len=edge_len,
            x_src=x_src, e_src=e_src, constants=constants, extra_cols=(~placed).nonzero().flatten(),
            inv_x_cols=inv_x_cols, inv_x_pos=inv_x_pos, inv_e_cols=inv_e_cols, inv_e_pos=inv_e_pos,
            site_offset=self.site_offset, head_nodes=tuple(self.head_nodes), num_weights=p,
            buffer_names=tuple(q.name for q in self.spec.params if not q.in_weight_space))

    def _node_attrs(self) -> NodeAttrs:
        flow = self.flow
        n = self.n_site_nodes + sum(c for c, _, _ in self.extra_nodes)
        node_type = torch.empty(n, dtype=torch.long)
        layer = torch.empty(n, dtype=torch.long)
        node_pos = torch.full((n,), -1, dtype=torch.long)
        activation = torch.zeros(n, dtype=torch.long)
        site_of = torch.full((n,), -1, dtype=torch.long)
        producer = {op.output: op.kind for op in flow.ops}
        counters = {"input": 0, "output": 0, "position": 0}
        for s in flow.sites:
            a = int(self.site_offset[s.id])
            sl = slice(a, a + s.size)
            if s.kind in ("input", "output", "position"):
                node_type[sl] = NODE[s.kind]
                node_pos[sl] = counters[s.kind] + torch.arange(s.size)
                counters[s.kind] += s.size
            else:
                kind = producer.get(s.id, "linear")
                node_type[sl] = (NODE["hidden"] if kind in ("linear", "recurrent") else NODE["norm"] if kind == "norm"
                                 else NODE["join"])
            layer[sl] = self.depth[s.id]
            site_of[sl] = s.id
            per_neuron: list[list[str]] = [[] for _ in range(s.size)] if s.activations else []
            for start, stop, name in s.activations:
                for i in range(start, stop):
                    per_neuron[i].append(name)
            if per_neuron:
                activation[sl] = torch.tensor([activation_code(ops) for ops in per_neuron])
        off = self.n_site_nodes
        for count, kind, depth in self.extra_nodes:
            node_type[off:off + count] = kind
            layer[off:off + count] = depth
            off += count
        return NodeAttrs(node_type=node_type, layer=layer, node_pos=node_pos, activation=activation, site=site_of)


def _cat(records: list[tuple], i: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Field ``i`` of the recorded tuples, concatenated (empty when nothing was recorded)."""
    return torch.cat([r[i] for r in records]) if records else torch.zeros(0, dtype=dtype)


def _first(cols: torch.Tensor, pos: torch.Tensor, placed: torch.Tensor):
    """The first placement of every column not placed yet (the inverse reads one copy); linear time."""
    if cols.numel() == 0:
        return cols, pos
    rank = torch.arange(cols.numel())
    first = torch.full((placed.numel(),), cols.numel(), dtype=torch.long)
    first.scatter_reduce_(0, cols, rank, reduce="amin")
    keep = (first[cols] == rank) & ~placed[cols]
    placed[cols[keep]] = True
    return cols[keep], pos[keep]

