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
from torch_geometric.utils import cumsum

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
    """Where every weight goes in a spec's graph. The per-edge tensors (``edge_index``, ``edge_type``,
    ``edge_len``, ``edge_part``) are stored as int32 where their values fit; graphs carry int64."""

    num_nodes: int
    node_dim: int                     # Fn: width of node features
    edge_dim: int                     # Fe: width of edge features (kernels zero-padded or split)
    nodes: NodeAttrs
    edge_index: torch.Tensor          # [2, M] (source, target)
    edge_type: torch.Tensor           # [M] codes of vocab.EDGE_TYPES
    edge_len: torch.Tensor            # [M] number of meaningful edge-feature entries (kernel numel)
    edge_part: torch.Tensor           # [M] which chunk of a split edge (0 unless split, see ``edge_width``)
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
        # concatenate the records field by field, freeing each as soon as it is copied (networks with
        # tens of millions of edges: the records and their concatenation must not coexist)
        edge_index = torch.empty(2, self.n_edges, dtype=torch.long)
        for i in range(2):
            if self.n_edges:
                torch.cat([r[i] for r in self.edges], out=edge_index[i])
            # keep each record's length (as field 0) for the per-record type and length below
            self.edges = [(r[0], None, r[2], r[3]) if i else (r[0].numel(), r[1], r[2], r[3]) for r in self.edges]
        edge_type = _per_edge(self.edges, 2)
        edge_len = _per_edge(self.edges, 3)
        self.edges = []
        for ids, width in self.widths:
            edge_len[ids] = torch.maximum(edge_len[ids], torch.tensor(width))
        e_edge = _cat(self.e_place, 0)
        e_slot = _cat(self.e_place, 1)
        self.e_place = [(r[0].numel(), None, r[2]) for r in self.e_place]
        e_cols = _cat(self.e_place, 2)
        self.e_place = []
        c_edge, c_slot, c_val = _cat(self.consts, 0), _cat(self.consts, 1), _cat(self.consts, 2, torch.float64)
        self.consts = []
        fe = edge_width(edge_len)
        if edge_len.numel() and fe < int(edge_len.max()):                # split the long edges in chunks
            chunks = (edge_len.clamp_min(1) + fe - 1) // fe
            first = cumsum(chunks)[:-1]
            owner = _owner(first, int(first[-1] + chunks[-1]))              # [M'] the edge each chunk splits
            e_edge, e_slot = _split(first, e_edge, e_slot, fe)
            c_edge, c_slot = _split(first, c_edge, c_slot, fe)
            edge_index, edge_type = edge_index.index_select(1, owner), edge_type.index_select(0, owner)
            edge_part = torch.arange(owner.numel()).sub_(first.index_select(0, owner))
            edge_len = edge_len.index_select(0, owner).sub_(edge_part * fe).clamp_(1, fe)
            del chunks, first, owner
        else:
            edge_part = torch.zeros(edge_index.shape[1], dtype=torch.long)
        x_node, x_slot, x_cols = (_cat(self.x_place, i) for i in range(3))
        fn = max(int(x_slot.max()) + 1 if x_slot.numel() else 1, 1)
        e_pos, x_pos = e_edge * fe + e_slot, x_node * fn + x_slot
        del e_edge, e_slot
        placed = torch.zeros(self.num_weights, dtype=torch.bool)
        inv_x_cols, inv_x_pos = _first(x_cols, x_pos, placed)
        inv_e_cols, inv_e_pos = _first(e_cols, e_pos, placed)
        # the extended vector: weights (columns < P), a zero (column P), the distinct constants
        p = self.num_weights
        constants, which = torch.unique(c_val, return_inverse=True)
        e_src = torch.full((edge_index.shape[1] * fe,), p, dtype=torch.long)
        e_src[c_edge * fe + c_slot] = p + 1 + which
        e_src[e_pos] = e_cols
        x_src = torch.full((n * fn,), p, dtype=torch.long)
        x_src[x_pos] = x_cols
        return GraphPlan(
            num_nodes=n, node_dim=fn, edge_dim=fe, nodes=nodes,
            edge_index=_compact(edge_index), edge_type=_compact(edge_type), edge_len=_compact(edge_len),
            edge_part=_compact(edge_part),
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


# Edge features are padded to the widest edge unless that costs more than SPLIT_FACTOR times the
# weights on edges and more than SPLIT_MIN_SLOTS slots: then long edges are split (see ``edge_width``).
SPLIT_FACTOR = 4
SPLIT_MIN_SLOTS = 1 << 20


def edge_width(edge_len: torch.Tensor) -> int:
    """The edge-feature width ``Fe`` of a graph whose edges hold ``edge_len`` entries each.

    The widest edge, when padding every edge to it stays within ``SPLIT_FACTOR`` x the entries it
    holds (or within ``SPLIT_MIN_SLOTS`` slots): small-kernel networks keep one edge per neuron pair.
    Otherwise the widest length ``W`` among the edges' lengths whose padded size
    ``sum(ceil(len / W)) * W`` stays within that bound (``W = 1``, one edge per weight, always does):
    an edge longer than ``W`` becomes ``ceil(len / W)`` parallel edges of ``W`` consecutive entries,
    numbered by ``edge_part``. Memory then grows with the number of weights, not edges x the largest
    kernel (a 7x7 stem, a 16x16 patch embedding)."""
    if edge_len.numel() == 0:
        return 1
    counts = torch.bincount(edge_len.clamp_min(1))                       # [max_len + 1]
    lengths = counts.nonzero().flatten()
    total = int((lengths * counts[lengths]).sum())
    bound = max(SPLIT_FACTOR * total, SPLIT_MIN_SLOTS)
    for w in sorted(lengths.tolist(), reverse=True):
        if int((counts[lengths] * ((lengths + w - 1) // w)).sum()) * w <= bound:
            return max(w, 1)
    return 1


def _compact(t: torch.Tensor) -> torch.Tensor:
    """A per-edge index tensor as stored in the (cached) plan: int32 when its values fit, which halves
    the plan of a network with tens of millions of edges; graphs get int64 copies."""
    if t.numel() and int(t.max()) < 2**31 - 1 and int(t.min()) >= -2**31:
        return t.to(torch.int32)
    return t


def _owner(first: torch.Tensor, total: int) -> torch.Tensor:
    """``[total]``: for each chunk, the index of the edge whose chunks start at ``first`` (sorted);
    a cumulative sum of start markers (``repeat_interleave`` is several times slower here)."""
    mark = torch.zeros(total, dtype=torch.long)
    mark.index_add_(0, first[1:], torch.ones(first.numel() - 1, dtype=torch.long))
    return mark.cumsum_(0)


def _split(first: torch.Tensor, edge: torch.Tensor, slot: torch.Tensor, fe: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge, slot) placements -> (chunk edge, slot within the chunk) for chunks of ``fe`` entries."""
    if fe == 1:
        return first.index_select(0, edge).add_(slot), torch.zeros_like(slot)
    return first.index_select(0, edge).add_(torch.div(slot, fe, rounding_mode="floor")), slot.remainder(fe)


def _per_edge(records: list[tuple], i: int) -> torch.Tensor:
    """A per-edge field of the edge records (an int for the whole record, or a tensor)."""
    return _cat(records, i)


def _cat(records: list[tuple], i: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Field ``i`` of the recorded tuples, concatenated (empty when nothing was recorded). A field may
    be an int shared by the record's entries; the record's length is then its field 0 (a tensor, or
    already the length as an int)."""
    def length(r):
        return r[0] if isinstance(r[0], int) else r[0].numel()

    parts = [r[i] if torch.is_tensor(r[i]) else torch.full((length(r),), r[i], dtype=dtype) for r in records]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def _first(cols: torch.Tensor, pos: torch.Tensor, placed: torch.Tensor):
    """The first placement of every column not placed yet (the inverse reads one copy); linear time."""
    if cols.numel() == 0:
        return cols, pos
    rank = torch.arange(cols.numel())
    first = torch.full((placed.numel(),), cols.numel(), dtype=torch.long)
    first.scatter_reduce_(0, cols, rank, reduce="amin")
    keep = first.index_select(0, cols).eq_(rank).logical_and_(placed.index_select(0, cols).logical_not_())
    del rank, first
    if bool(keep.all()):                                  # every placement is the first of its column
        placed.index_fill_(0, cols, True)
        return cols, pos
    cols, pos = cols[keep], pos[keep]
    placed.index_fill_(0, cols, True)
    return cols, pos

