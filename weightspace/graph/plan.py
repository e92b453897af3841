"""Index arithmetic of a spec's parameter graph, computed once per spec.

A :class:`GraphPlan` says where every weight of the flat vector (``WeightSpace.flatten()`` order)
goes in the graph: a slot of a node's features, a slot of an edge's features, or the graph-level
``extra`` vector (weights no op of the dataflow describes). Building graphs for a batch is then one
gather per tensor; inverting them is the reverse gather.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..spec.types import Op, ParamUse, SiteView
from ..symmetry.plan import cached
from .vocab import ACT, EDGE, NODE, activation_code


@dataclass
class GraphPlan:
    num_nodes: int
    node_dim: int                     # Fn: width of node features
    edge_dim: int                     # Fe: width of edge features (kernels zero-padded)
    node_type: torch.Tensor           # [N] codes of vocab.NODE_TYPES
    layer: torch.Tensor               # [N] depth of the node's site in the dataflow
    node_pos: torch.Tensor            # [N] identity of input / output neurons, -1 for hidden ones
    activation: torch.Tensor          # [N] codes of vocab.ACTIVATIONS
    site: torch.Tensor                # [N] site id (-1 for attention head nodes)
    edge_index: torch.Tensor          # [2, M] (source, target)
    edge_type: torch.Tensor           # [M] codes of vocab.EDGE_TYPES
    edge_len: torch.Tensor            # [M] number of meaningful edge-feature entries (kernel numel)
    const_pos: torch.Tensor           # flat positions in [M * Fe] holding constants (identity edges)
    const_val: torch.Tensor           # their values
    x_cols: torch.Tensor              # weight columns written to node slots ...
    x_pos: torch.Tensor               # ... at these flat positions of [N * Fn]
    e_cols: torch.Tensor              # weight columns written to edge slots ...
    e_pos: torch.Tensor               # ... at these flat positions of [M * Fe]
    extra_cols: torch.Tensor          # weight columns kept as graph-level features
    inv_x_cols: torch.Tensor          # first placement of each weight, for the inverse
    inv_x_pos: torch.Tensor
    inv_e_cols: torch.Tensor
    inv_e_pos: torch.Tensor
    x_src: torch.Tensor               # [N * Fn] column of the extended weight vector for each node slot
    e_src: torch.Tensor               # [M * Fe] same for edge slots (see ``extend``)
    constants: torch.Tensor           # values appended to the weight vector by ``extend`` (after a 0)
    site_offset: torch.Tensor         # [num_sites] first node of each site
    head_nodes: tuple                 # per attention op: (first head node, heads, v site view)
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


class _Builder:
    def __init__(self, spec: WeightSpaceSpec):
        self.spec = spec
        self.flow = spec.dataflow
        sizes = torch.tensor([s.size for s in self.flow.sites], dtype=torch.long)
        self.site_offset = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])[:-1]
        self.n_site_nodes = int(sizes.sum())
        self.extra_nodes: list[tuple[int, int, int]] = []  # (count, node type, layer)
        self.edges: list[tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]] = []  # src, dst, type, len
        self.n_edges = 0
        self.e_place: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # edge id, slot, column
        self.x_place: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # node id, slot, column
        self.consts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # edge id, slot, value
        self.head_nodes: list[tuple[int, int, SiteView]] = []
        self.widths: list[tuple[torch.Tensor, int]] = []
        offsets, off = {}, 0
        for name in spec.weight_names:
            offsets[name] = off
            off += spec[name].numel
        self.col_offset = offsets
        self.num_weights = off
        self.depth = self._depths()

    # ------------------------------------------------------------------------------ helpers
    def cols(self, use: ParamUse) -> torch.Tensor:
        """Weight columns of the used slice, shaped like it."""
        p = self.spec[use.name]
        if use.name not in self.col_offset:
            raise SpecError(f"'{use.name}' is used by the dataflow but is not a learned weight")
        full = torch.arange(p.numel, dtype=torch.long).view(p.shape) + self.col_offset[use.name]
        return full[tuple(slice(a, b) for a, b in use.ranges)]

    def node(self, site: int, neuron: torch.Tensor) -> torch.Tensor:
        return self.site_offset[site] + neuron

    def add_edges(self, src: torch.Tensor, dst: torch.Tensor, kind: str, length) -> torch.Tensor:
        src, dst = src.reshape(-1), dst.reshape(-1)
        n = src.numel()
        ids = torch.arange(self.n_edges, self.n_edges + n)
        length = torch.as_tensor(length, dtype=torch.long).expand(n).clone()
        self.edges.append((src, dst, EDGE[kind], length))
        self.n_edges += n
        return ids

    def const(self, edge_ids: torch.Tensor, value) -> None:
        v = torch.as_tensor(value, dtype=torch.float64).expand(edge_ids.numel()).clone()
        self.consts.append((edge_ids.reshape(-1), torch.zeros(edge_ids.numel(), dtype=torch.long), v))

    @staticmethod
    def view_entries(view: SiteView, entries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries of an op's input axis -> (neuron of the site, position within the neuron)."""
        li = view.length * view.inner
        neuron = view.start + (entries % li) // view.inner
        pos = (entries // li) * view.inner + entries % view.inner
        return neuron, pos

    def neuron_values(self, use: ParamUse, n_neurons: int, view: SiteView | None):
        """A per-neuron parameter: (neuron index [E], slot [E], column [E]) with each neuron's values
        spread over consecutive slots (positions x fixed axes)."""
        c = self.cols(use)
        dims = list(use.dims)
        if "neuron" in dims:
            a = dims.index("neuron")
            c = c.movedim(a, 0)
            n_axis = c.shape[0]
            c = c.reshape(n_axis, -1)
            k = c.shape[1]
            entries = torch.arange(n_axis)
            if view is not None and n_axis == view.entries and (view.inner > 1 or view.outer > 1):
                neuron, pos = self.view_entries(SiteView(0, 0, view.length, view.inner, view.outer), entries)
                slot = pos[:, None] * k + torch.arange(k)
                return neuron[:, None].expand(-1, k), slot, c
            if n_axis == n_neurons:
                return entries[:, None].expand(-1, k), torch.arange(k).expand(n_axis, -1), c
            if n_neurons % n_axis == 0:  # shared by every block of neurons (per-head parameters)
                neuron = torch.arange(n_neurons)
                return neuron[:, None].expand(-1, k), torch.arange(k).expand(n_neurons, -1), c[neuron % n_axis]
            raise SpecError(f"'{use.name}' does not line up with the {n_neurons} neurons it acts on")
        flat = c.reshape(1, -1)  # one value (or vector) shared by all neurons
        k = flat.shape[1]
        return (torch.arange(n_neurons)[:, None].expand(-1, k), torch.arange(k).expand(n_neurons, -1),
                flat.expand(n_neurons, -1))

    # ------------------------------------------------------------------------------ dataflow
    def _depths(self) -> list[int]:
        depth = [0] * len(self.flow.sites)
        for op in self.flow.ops:
            d = max((depth[v.site] for v in op.inputs), default=-1) + 1
            depth[op.output] = max(depth[op.output], d)
        return depth

    def build(self) -> GraphPlan:
        for op in self.flow.ops:
            handler = getattr(self, f"_op_{op.kind}", None)
            if handler is None:
                raise SpecError(f"no graph rule for dataflow op kind '{op.kind}' ({op.name})")
            handler(op)
        return self._finish()

    def _op_linear(self, op: Op) -> None:
        w, b = op.param("weight"), op.param("bias")
        view, out = op.inputs[0], op.output
        if w is not None:
            c = self.cols(w)
            dims = list(w.dims)
            a_out, a_in = dims.index("out"), dims.index("in")
            rest = [k for k in range(len(dims)) if k not in (a_out, a_in)]
            c = c.permute(a_out, a_in, *rest)
            n_o, n_i = c.shape[0], c.shape[1]
            c = c.reshape(n_o, n_i, -1)
            k = c.shape[2]
            g = op.attr("groups", 1)
            o = torch.arange(n_o)[:, None].expand(n_o, n_i)
            j = torch.arange(n_i)[None, :].expand(n_o, n_i)
            if g == 1:
                out_n, in_e = o, j
            elif not op.attr("transposed", False):
                out_n, in_e = o, (o // (n_o // g)) * n_i + j
            else:  # weight [C_in, C_out / g, ...]: 'out' indexes within the input channel's block
                out_n, in_e = (j // (n_i // g)) * n_o + o, j
            neuron, pos = self.view_entries(view, in_e.reshape(-1))
            src = self.node(view.site, neuron)
            dst = self.node(out, out_n.reshape(-1))
            key = dst * (self.n_site_nodes + 1) + src
            uniq, inverse = torch.unique(key, return_inverse=True)
            width = view.inner * view.outer * k
            kind = "embedding" if op.attr("embedding") else "conv" if op.attr("kernel_size") else "linear"
            ids = self.add_edges(uniq % (self.n_site_nodes + 1), uniq // (self.n_site_nodes + 1), kind, width)
            edge = ids[inverse][:, None].expand(-1, k)
            slot = pos[:, None] * k + torch.arange(k)
            self.e_place.append((edge.reshape(-1), slot.reshape(-1), c.reshape(-1, k).reshape(-1)))
        if b is not None:
            n_out = self.flow.site(out).size
            neuron, slot, c = self.neuron_values(_as_neuron(b), n_out, None)
            self.x_place.append((self.node(out, neuron).reshape(-1), slot.reshape(-1), c.reshape(-1)))

    def _op_recurrent(self, op: Op) -> None:
        """An RNN layer: edges input -> hidden and hidden -> hidden (self-loops included), each with
        one feature per gate; both biases per gate as node features."""
        gates = op.attr("gates", 1)
        view, out = op.inputs[0], op.output
        h = self.flow.site(out).size
        for role, src_view, kind in (("weight_ih", view, "recurrent_in"), ("weight_hh", SiteView(out, 0, h),
                                                                              "recurrent")):
            use = op.param(role)
            c = self.cols(use).reshape(gates, h, -1)                     # [gates, H, inputs]
            n_in = c.shape[2]
            o = torch.arange(h)[:, None].expand(h, n_in)
            neuron, pos = self.view_entries(src_view, torch.arange(n_in)[None, :].expand(h, n_in).reshape(-1))
            src, dst = self.node(src_view.site, neuron), self.node(out, o.reshape(-1))
            key = dst * (self.n_site_nodes + 1) + src
            uniq, inverse = torch.unique(key, return_inverse=True)
            width = src_view.inner * src_view.outer * gates
            ids = self.add_edges(uniq % (self.n_site_nodes + 1), uniq // (self.n_site_nodes + 1), kind, width)
            edge = ids[inverse][:, None].expand(-1, gates)
            slot = pos[:, None] * gates + torch.arange(gates)
            self.e_place.append((edge.reshape(-1), slot.reshape(-1), c.permute(1, 2, 0).reshape(-1)))
        for k, role in enumerate(("bias_ih", "bias_hh")):
            use = op.param(role)
            if use is not None:
                c = self.cols(use).reshape(gates, h)
                node = self.node(out, torch.arange(h))[:, None].expand(h, gates)
                slot = k * gates + torch.arange(gates).expand(h, gates)
                self.x_place.append((node.reshape(-1), slot.reshape(-1), c.T.reshape(-1)))

    def _one_to_one(self, op: Op, view: SiteView, kind: str) -> torch.Tensor:
        n = view.length
        return self.add_edges(self.node(view.site, view.start + torch.arange(n)), self.node(op.output, torch.arange(n)),
                              kind, 1)

    def _op_norm(self, op: Op) -> None:
        view = op.inputs[0]
        n = self.flow.site(op.output).size
        edges = self._one_to_one(op, SiteView(view.site, view.start, view.length), "norm")
        w = op.param("weight")
        if w is None:
            self.const(edges, 1.0)
        else:
            neuron, slot, c = self.neuron_values(w, n, view)
            self.e_place.append((edges[neuron].reshape(-1), slot.reshape(-1), c.reshape(-1)))
            self.edge_width(edges, int(slot.max()) + 1)
        base = 0
        for role in ("bias", "running_mean", "running_var"):
            use = op.param(role)
            if use is None:
                continue
            neuron, slot, c = self.neuron_values(use, n, view)
            self.x_place.append((self.node(op.output, neuron).reshape(-1), (slot + base).reshape(-1), c.reshape(-1)))
            base += int(slot.max()) + 1

    def edge_width(self, ids: torch.Tensor, width: int) -> None:
        """Edges whose features hold ``width`` parameter values (a norm's per-neuron vector)."""
        self.widths.append((ids, width))

    def _op_affine(self, op: Op) -> None:
        n = self.flow.site(op.output).size
        kind = op.attr("op")
        view = op.inputs[0] if op.inputs else None
        edges = self._one_to_one(op, SiteView(view.site, view.start, view.length), "affine") if view else None
        for use in op.params:
            neuron, slot, c = self.neuron_values(use, n, view)
            if kind in ("mul", "div", "rdiv") and edges is not None:
                self.e_place.append((edges[neuron].reshape(-1), slot.reshape(-1), c.reshape(-1)))
                self.edge_width(edges, int(slot.max()) + 1)
            else:
                self.x_place.append((self.node(op.output, neuron).reshape(-1), slot.reshape(-1), c.reshape(-1)))
        if edges is not None and kind not in ("mul", "div", "rdiv"):
            self.const(edges, -1.0 if kind == "rsub" else 1.0)

    def _join(self, op: Op, kind: str, values=None) -> None:
        offset = 0
        for i, view in enumerate(op.inputs):
            n = view.length
            src = self.node(view.site, view.start + torch.arange(n))
            dst = self.node(op.output, offset + torch.arange(n))
            ids = self.add_edges(src, dst, kind, 1)
            self.const(ids, 1.0 if values is None else values[i])
            if kind == "concat":
                offset += n

    def _op_add(self, op: Op) -> None:
        self._join(op, "residual", op.attr("signs", (1,) * len(op.inputs)))

    def _op_concat(self, op: Op) -> None:
        self._join(op, "concat")

    def _op_stack(self, op: Op) -> None:
        self._join(op, "stack")

    def _op_mul(self, op: Op) -> None:
        self._join(op, "gate")

    def _op_activation(self, op: Op) -> None:
        self._join(op, "activation")

    def _op_rearrange(self, op: Op) -> None:
        view = op.inputs[0]
        n_out = self.flow.site(op.output).size
        r = view.length // n_out
        entries = torch.arange(view.length)
        ids = self.add_edges(self.node(view.site, view.start + entries), self.node(op.output, entries // r),
                             "rearrange", 1)
        self.const(ids, (entries % r + 1).double())

    def _op_attention(self, op: Op) -> None:
        q, k, v = op.inputs
        heads = op.attr("heads", 1)
        first = self.n_site_nodes + sum(c for c, _, _ in self.extra_nodes)
        self.extra_nodes.append((heads, NODE["head"], self.depth[op.output]))
        self.head_nodes.append((first, heads, v))
        for view, kind in ((q, "attn_query"), (k, "attn_key")):
            d = view.length // heads
            e = torch.arange(view.length)
            self.const(self.add_edges(self.node(view.site, view.start + e), first + e // d, kind, 1), 1.0)
        dv = v.length // heads
        e = torch.arange(v.length)
        self.const(self.add_edges(first + e // dv, self.node(op.output, e), "attn_head", 1), 1.0)
        self.const(self.add_edges(self.node(v.site, v.start + e), self.node(op.output, e), "attn_value", 1), 1.0)

    # ------------------------------------------------------------------------------ assembly
    def _finish(self) -> GraphPlan:
        flow = self.flow
        n_extra = sum(c for c, _, _ in self.extra_nodes)
        n = self.n_site_nodes + n_extra
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
        src = torch.cat([e[0] for e in self.edges]) if self.edges else torch.zeros(0, dtype=torch.long)
        dst = torch.cat([e[1] for e in self.edges]) if self.edges else torch.zeros(0, dtype=torch.long)
        edge_type = torch.cat([torch.full((e[0].numel(),), e[2]) for e in self.edges]) if self.edges else src
        edge_len = torch.cat([e[3] for e in self.edges]) if self.edges else src
        for ids, width in self.widths:
            edge_len[ids] = torch.maximum(edge_len[ids], torch.tensor(width))
        fe = max(int(edge_len.max()) if edge_len.numel() else 1, 1)
        e_edge = torch.cat([p[0] for p in self.e_place]) if self.e_place else torch.zeros(0, dtype=torch.long)
        e_slot = torch.cat([p[1] for p in self.e_place]) if self.e_place else e_edge
        e_cols = torch.cat([p[2] for p in self.e_place]) if self.e_place else e_edge
        x_node = torch.cat([p[0] for p in self.x_place]) if self.x_place else torch.zeros(0, dtype=torch.long)
        x_slot = torch.cat([p[1] for p in self.x_place]) if self.x_place else x_node
        x_cols = torch.cat([p[2] for p in self.x_place]) if self.x_place else x_node
        fn = max(int(x_slot.max()) + 1 if x_slot.numel() else 1, 1)
        e_pos, x_pos = e_edge * fe + e_slot, x_node * fn + x_slot
        c_edge = torch.cat([c[0] for c in self.consts]) if self.consts else torch.zeros(0, dtype=torch.long)
        c_slot = torch.cat([c[1] for c in self.consts]) if self.consts else c_edge
        c_val = torch.cat([c[2] for c in self.consts]) if self.consts else torch.zeros(0, dtype=torch.float64)
        placed = torch.zeros(self.num_weights, dtype=torch.bool)
        inv_x_cols, inv_x_pos = _first(x_cols, x_pos, placed)
        inv_e_cols, inv_e_pos = _first(e_cols, e_pos, placed)
        extra_cols = (~placed).nonzero().flatten()
        buffers = tuple(p.name for p in self.spec.params if not p.in_weight_space)
        p = self.num_weights
        constants, which = torch.unique(c_val, return_inverse=True)
        e_src = torch.full((src.numel() * fe,), p, dtype=torch.long)
        e_src[c_edge * fe + c_slot] = p + 1 + which
        e_src[e_pos] = e_cols
        x_src = torch.full((n * fn,), p, dtype=torch.long)
        x_src[x_pos] = x_cols
        return GraphPlan(n, fn, fe, node_type, layer, node_pos, activation, site_of, torch.stack([src, dst]), edge_type,
                         edge_len, c_edge * fe + c_slot, c_val, x_cols, x_pos, e_cols, e_pos, extra_cols, inv_x_cols,
                         inv_x_pos, inv_e_cols, inv_e_pos, x_src, e_src, constants, self.site_offset,
                         tuple(self.head_nodes), self.num_weights, buffers)


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


def _as_neuron(use: ParamUse) -> ParamUse:
    """A bias indexes the output neurons: read its 'out' axis as the neuron axis."""
    return ParamUse(use.role, use.name, tuple("neuron" if d == "out" else d for d in use.dims), use.ranges)
