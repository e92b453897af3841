"""Index arithmetic of a spec's parameter graph, computed once per spec.

A :class:`GraphPlan` says where every weight of the flat vector (``WeightSpace.flatten()`` order)
goes in the graph: a slot of a node's features, a slot of an edge's features, or the graph-level
``extra`` vector (weights no op of the dataflow describes). Building graphs for a batch is then one
gather per tensor; inverting them is the reverse gather.

What each dataflow op contributes is in :mod:`weightspace.graph.rules`; this module assembles it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch

from ..spec.cache import cached
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..spec.types import SiteView

from .intseq import IntSeq, Slab
from .records import (as_int32, cat_field, chunk_owner, edge_pos, fill, first_placements, joined, narrow, narrowest,
                      pack, unpack)
from .rules import OpRules
from .vocab import NODE, activation_code


@dataclass(frozen=True, eq=False)
class NodeAttrs:
    """Categorical per-node attributes, each ``[N]`` in the narrowest integer dtype that holds it
    (copied onto every graph as is)."""

    node_type: torch.Tensor           # codes of vocab.NODE_TYPES
    layer: torch.Tensor               # depth of the node's site in the dataflow
    node_pos: torch.Tensor            # identity of input / output neurons, -1 for hidden ones
    activation: torch.Tensor          # codes of vocab.ACTIVATIONS
    site: torch.Tensor                # site id (-1 for attention head nodes)


@dataclass(frozen=True, eq=False)
class GraphPlan:
    """Where every weight goes in a spec's graph. Index tensors are int32 where their values fit and
    categorical attributes are in the narrowest integer dtype that holds them (:func:`.records.narrow`): a
    network with tens of millions of edges keeps a plan of a few bytes per edge. Graphs get the
    attributes in these dtypes and ``edge_index`` as int64."""

    num_nodes: int
    node_dim: int                     # Fn: width of node features
    edge_dim: int                     # Fe: width of edge features (kernels zero-padded or split)
    nodes: NodeAttrs
    num_edges: int                    # M
    edges: tuple[tuple[int, IntSeq, IntSeq], ...]  # per op's edges: (first edge, sources, targets)
    edge_type: torch.Tensor           # [M] codes of vocab.EDGE_TYPES
    edge_len: torch.Tensor            # [M] number of meaningful edge-feature entries (kernel numel)
    edge_part: torch.Tensor           # [M] which chunk of a split edge (0 unless split, see ``edge_width``)
    x_src: torch.Tensor               # [N * Fn] column of the extended weight vector for each node slot
    e_places: tuple[tuple[IntSeq, IntSeq], ...]  # per op: (flat positions in [M * Fe], columns of the
    #                                   extended vector); constants first, later records win; unplaced: 0
    e_src_small: torch.Tensor | None  # ``e_src`` kept decoded when small (one gather, no per-op decode)
    constants: torch.Tensor           # values appended to the weight vector by ``extend`` (after a 0)
    extra_cols: torch.Tensor          # weight columns kept as graph-level features
    inv_x_cols: torch.Tensor          # for the inverse: the first placement of each weight in a node
    inv_x_pos: torch.Tensor           # slot (flat position in [N * Fn]) ...
    inv_e: tuple[tuple[IntSeq, IntSeq], ...]  # ... or else in an edge slot: per op (columns, positions)
    site_offset: torch.Tensor         # [num_sites] first node of each site
    head_nodes: tuple[tuple[int, int, SiteView], ...]  # per attention op: (first head node, query heads, output view)
    num_weights: int
    buffer_names: tuple[str, ...]

    @property
    def e_src(self) -> torch.Tensor:
        """``[M * Fe]``: the column of the extended vector (see ``extend``) of every edge slot, int32
        where it fits; decoded from ``e_places`` on each access."""
        if self.e_src_small is not None:
            return self.e_src_small
        return _decode_src(self.e_places, self.num_edges * self.edge_dim, self.num_weights, self.constants.numel())

    @property
    def edge_index(self) -> torch.Tensor:
        """``[2, M]`` int64 (source, target), written anew on each access (see ``write_edge_index``)."""
        return self.write_edge_index(torch.empty(2, self.num_edges, dtype=torch.long))

    def write_edge_index(self, out: torch.Tensor) -> torch.Tensor:
        """The edges into ``out [2, M]`` (int64 / int32), decoded op by op (see :mod:`.intseq`)."""
        for a, src, dst in self.edges:
            src.write(out[0, a:a + src.n])
            dst.write(out[1, a:a + dst.n])
        return out

    def extend(self, flat: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``[B, P]`` weights -> ``[B, P + 1 + C]``: weights, a zero, the constants. Every node and edge
        slot is then one column of this (``x_src`` / ``e_src``): building features is one gather.
        ``flat`` may also be the weights as ``[B, n_i]`` blocks (``sum n_i = P``), written straight
        into the one buffer (no flat copy first); the dtype is ``torch.cat``'s. (The copy plan extends
        a sub-vector of the weights the same way: the zero and constants follow whatever comes first.)"""
        blocks = [flat] if torch.is_tensor(flat) else list(flat)
        if not blocks:
            raise ValueError("extend needs the weights: a [B, P] tensor or a non-empty list of [B, n_i] blocks")
        dtype = functools.reduce(torch.promote_types, (t.dtype for t in blocks))
        b, p = blocks[0].shape[0], sum(t.shape[1] for t in blocks)
        ext = torch.empty(b, p + 1 + self.constants.numel(), dtype=dtype, device=blocks[0].device)
        off = 0
        for t in blocks:
            ext[:, off:off + t.shape[1]] = t
            off += t.shape[1]
        ext[:, p] = 0
        ext[:, p + 1:] = self.constants.to(ext)
        return ext


def graph_plan(spec: WeightSpaceSpec) -> GraphPlan:
    """The (cached) graph plan of a spec; the spec must carry a dataflow (traced specs do)."""
    if spec.dataflow is None:
        raise SpecError("this spec has no dataflow (hand-written with from_axes?); parameter graphs are drawn from "
                        "a traced spec: WeightSpaceSpec.from_module(model, example_input) or WeightSpaceSpec.mlp")
    return cached(spec, "graph_plan", lambda: _Builder(spec).build())


class _Builder(OpRules):
    """Applies the op rules to the whole dataflow, then assembles the plan.

    Memory (networks with ~10^8 edges): right after its op, every large recorded index tensor is
    packed as an :class:`~weightspace.graph.intseq.IntSeq` (a few numbers per output neuron for a
    linear / conv layer; small ones become int32), so the record lists never hold full-size int64
    tensors (nor leave a fragmented heap behind). The records are then assembled one at a time,
    each freed once used; splitting long edges (see ``edge_width``) is done per record. Edges,
    placements and the inverse stay packed in the plan; only the categorical attributes and the
    node slots are dense."""

    def build(self) -> GraphPlan:
        self.store = Slab()
        for op in self.flow.ops:
            marks = [len(r) for r in (self.edges, self.e_place, self.x_place, self.consts)]
            self.apply(op)
            for records, mark, least in zip((self.edges, self.e_place, self.x_place, self.consts), marks,
                                            (4096, 4096, None, None)):
                records[mark:] = [tuple(pack(f, least, self.store) if least else as_int32(f, self.store) for f in r)
                                  for r in records[mark:]]
        nodes = self._node_attrs()
        n, p = nodes.node_type.numel(), self.num_weights
        edge_len = fill(self.edges, 3, self.n_edges, torch.int32)
        for ids, width in self.widths:
            edge_len[ids] = edge_len[ids].clamp_min(width)
        self.widths = []
        fe = edge_width(edge_len)
        first = None                                            # old edge -> its first chunk (when split)
        if edge_len.numel() and fe < int(edge_len.max()):
            chunks = edge_len.clamp_min(1).add_(fe - 1).div_(fe, rounding_mode="floor")
            m = int(chunks.sum(dtype=torch.long))
            self._parts = int(chunks.max())
            first = torch.zeros(edge_len.numel(), dtype=torch.int32 if m < 2**31 else torch.long)
            first[1:] = chunks[:-1]
            first.cumsum_(0)
            del chunks
        else:
            m = edge_len.numel()
        edges, edge_type, new_len, edge_part = self._edges(edge_len, first, m, fe)
        del edge_len
        # constants (identity edges, residual signs) first, weights then override their slots
        constants, which = torch.unique(cat_field(self.consts, 2, torch.float64), return_inverse=True)
        places = []
        if self.consts:
            pos = torch.cat([edge_pos(edge, slot, first, fe) for edge, slot, _ in self.consts])
            places.append((IntSeq.of(pos, self.store), IntSeq.of(which.add_(p + 1), self.store)))
        self.consts = []
        placed = torch.zeros(p, dtype=torch.bool)
        x_cols, x_pos = [], []
        fn = max((int(s.max()) + 1 if torch.is_tensor(s) and s.numel() else int(s) + 1 for _, s, _ in self.x_place),
                 default=1)
        x_src = torch.full((n * fn,), p, dtype=torch.int32 if p + 1 + constants.numel() < 2**31 else torch.long)
        for node, slot, cols in self.x_place:
            pos = node.long() * fn + slot
            x_src[pos] = cols.to(x_src.dtype)
            c, q = first_placements(cols, pos, placed)
            x_cols.append(c)
            x_pos.append(q)
        self.x_place = []
        inverse = []
        for r in range(len(self.e_place)):
            edge, slot, packed = self.e_place[r]
            self.e_place[r] = None
            pos = edge_pos(unpack(edge), unpack(slot), first, fe)
            del edge, slot
            cols = unpack(packed)
            place = (IntSeq.of(pos, self.store), packed if isinstance(packed, IntSeq) else IntSeq.of(cols, self.store))
            places.append(place)
            c, q = first_placements(cols, pos, placed)
            if c is cols:                                   # every placement is its column's first
                inverse.append(place[::-1])
            elif c.numel():
                inverse.append((IntSeq.of(c, self.store), IntSeq.of(q, self.store)))
            del pos, cols, c, q
        self.e_place = []
        return GraphPlan(
            num_nodes=n, node_dim=fn, edge_dim=fe, nodes=nodes, num_edges=m, edges=edges,
            edge_type=edge_type, edge_len=new_len, edge_part=edge_part,
            x_src=x_src, e_places=tuple(places), constants=constants,
            e_src_small=_decode_src(places, m * fe, p, constants.numel()) if m * fe <= SMALL_SLOTS else None,
            extra_cols=as_int32((~placed).nonzero().flatten()),
            inv_x_cols=as_int32(joined(x_cols)), inv_x_pos=as_int32(joined(x_pos)), inv_e=tuple(inverse),
            site_offset=self.site_offset, head_nodes=tuple(self.head_nodes), num_weights=p,
            buffer_names=tuple(q.name for q in self.spec.params if not q.in_weight_space))

    def _edges(self, edge_len: torch.Tensor, first: torch.Tensor | None, m: int, fe: int):
        """The edge records -> per record ``(first edge, sources, targets)``, and ``edge_type``,
        ``edge_len``, ``edge_part`` (after splitting long edges), record by record."""
        edges = []
        edge_type = torch.empty(m, dtype=torch.int8)
        if first is None:
            new_len, edge_part = edge_len, torch.zeros(m, dtype=torch.int8)
        else:
            new_len = torch.empty(m, dtype=narrowest(1, fe))                 # written in the final dtypes
            edge_part = torch.empty(m, dtype=narrowest(0, self._parts - 1))
        a = 0
        for r in range(len(self.edges)):
            src, dst, kind, _ = self.edges[r]
            self.edges[r] = None
            k = src.n if isinstance(src, IntSeq) else src.numel()
            if first is None:
                out = slice(a, a + k)
                own = None
            else:
                f = first[a:a + k].long()
                stop = int(first[a + k]) if a + k < first.numel() else m
                out = slice(int(f[0]) if k else stop, stop)
                size = out.stop - out.start
                own = None if size == k else chunk_owner(f, stop)
                if own is None:
                    new_len[out], edge_part[out] = edge_len[a:a + k].clamp(1, fe), 0
                else:
                    part = torch.arange(out.start, out.stop).sub_(f.index_select(0, own))
                    edge_part[out] = part
                    new_len[out] = edge_len[a:a + k].index_select(0, own).sub_(part * fe).clamp_(1, fe)
            if own is not None:
                src = IntSeq.of(unpack(src).index_select(0, own), self.store)
                dst = IntSeq.of(unpack(dst).index_select(0, own), self.store)
            edges.append((out.start, pack(src, 0, self.store), pack(dst, 0, self.store)))
            edge_type[out] = kind
            a += k
        self.edges = []
        return tuple(edges), edge_type, narrow(new_len), narrow(edge_part)

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
        return NodeAttrs(node_type=narrow(node_type), layer=narrow(layer), node_pos=narrow(node_pos),
                         activation=narrow(activation), site=narrow(site_of))


SMALL_SLOTS = 1 << 22       # plans with up to this many edge slots also keep ``e_src`` decoded (16 MB)


def _decode_src(places, slots: int, p: int, c: int) -> torch.Tensor:
    """``[slots]`` column of the extended vector of every edge slot (``p``, the zero, where unplaced)."""
    out = torch.full((slots,), p, dtype=torch.int32 if p + 1 + c < 2**31 else torch.long)
    for pos, cols in places:
        for (_, q), (_, col) in zip(pos.windows(), cols.windows()):
            out[q] = col.to(out.dtype)
    return out


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
