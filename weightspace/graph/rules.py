"""Per-op-kind graph rules: what each dataflow op adds to a spec's parameter graph.

:class:`OpRules` walks the dataflow once and records, per op, the edges it draws (source node,
target node, edge type, number of meaningful feature entries), where its weights go (a slot of an
edge's or a node's features) and the constant values of parameter-free edges (identity, residual
sign, ...). :mod:`weightspace.graph.plan` assembles these records into a :class:`GraphPlan`.
"""
from __future__ import annotations

import torch
from torch_geometric.utils import cumsum

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..spec.types import Op, ParamUse, SiteView
from .heads import attention_heads
from .vocab import EDGE, NODE

Placement = tuple[torch.Tensor, torch.Tensor | int, torch.Tensor]   # (edge or node id, slot, column / value)


class OpRules:
    """The edges, placements and constants of every op of a spec's dataflow (``apply`` one op at a
    time). Nodes ``[0, n_site_nodes)`` are the neurons of the sites, in site order; attention head
    nodes follow them."""

    def __init__(self, spec: WeightSpaceSpec):
        self.spec = spec
        self.flow = spec.dataflow
        sizes = torch.tensor([s.size for s in self.flow.sites], dtype=torch.long)
        self.site_offset = cumsum(sizes)[:-1]                # first node of each site
        self.n_site_nodes = int(sizes.sum())
        self.extra_nodes: list[tuple[int, int, int]] = []    # (count, node type, layer)
        self.edges: list[tuple[torch.Tensor, torch.Tensor, int, int | torch.Tensor]] = []  # src, dst, type, len
        self.n_edges = 0
        self.e_place: list[Placement] = []                   # edge id, slot, column
        self.x_place: list[Placement] = []                   # node id, slot, column
        self.consts: list[Placement] = []                    # edge id, slot, value
        self.head_nodes: list[tuple[int, int, SiteView]] = []
        self.widths: list[tuple[torch.Tensor, int]] = []
        offsets, off = {}, 0
        for name in spec.weight_names:
            offsets[name] = off
            off += spec[name].numel
        self.col_offset = offsets
        self.num_weights = off
        self.depth = self._depths()

    def apply(self, op: Op) -> None:
        handler = getattr(self, f"_op_{op.kind}", None)
        if handler is None:
            raise SpecError(f"no graph rule for dataflow op kind '{op.kind}' ({op.name})")
        handler(op)

    # ------------------------------------------------------------------------------ helpers
    def _depths(self) -> list[int]:
        depth = [0] * len(self.flow.sites)
        for op in self.flow.ops:
            d = max((depth[v.site] for v in op.inputs), default=-1) + 1
            depth[op.output] = max(depth[op.output], d)
        return depth

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
        """Edges ``src[i] -> dst[i]`` of one kind; ``length``: meaningful feature entries (one int for
        all, or one per edge). Type and a shared length are kept as scalars until the plan is
        assembled (a few bytes per edge less on networks with tens of millions of edges)."""
        src, dst = src.reshape(-1), dst.reshape(-1)
        n = src.numel()
        ids = torch.arange(self.n_edges, self.n_edges + n)
        if not isinstance(length, int):
            length = torch.as_tensor(length, dtype=torch.long)
            length = int(length) if length.dim() == 0 else length.expand(n).clone()
        self.edges.append((src, dst, EDGE[kind], length))
        self.n_edges += n
        return ids

    def add_unique_edges(self, src: torch.Tensor, dst: torch.Tensor, kind: str, length) -> torch.Tensor:
        """Edges between site neurons for (src, dst) pairs that may repeat (a layer reading flattened
        conv features has many weights per pair): one edge per distinct pair, in (dst, src) order.
        Returns the edge id of every given pair. Pairs already distinct and in that order (a plain
        linear or conv layer) skip the sort."""
        stride = self.n_site_nodes + 1
        src, dst = src.reshape(-1), dst.reshape(-1)
        key = dst * stride + src
        if key.numel() < 2 or bool((key[1:] > key[:-1]).all()):
            del key
            return self.add_edges(src, dst, kind, length)
        uniq, inverse = torch.unique(key, return_inverse=True)
        return self.add_edges(uniq % stride, uniq // stride, kind, length)[inverse]

    def const(self, edge_ids: torch.Tensor, value) -> None:
        v = torch.as_tensor(value, dtype=torch.float64).expand(edge_ids.numel()).clone()
        self.consts.append((edge_ids.reshape(-1), torch.zeros(edge_ids.numel(), dtype=torch.long), v))

    def edge_width(self, ids: torch.Tensor, width: int) -> None:
        """Edges whose features hold ``width`` parameter values (a norm's per-neuron vector)."""
        self.widths.append((ids, width))

    @staticmethod
    def view_entries(view: SiteView, entries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries of an op's input axis -> (neuron of the site, position within the neuron)."""
        if view.inner == 1 and view.outer == 1:              # one entry per neuron: no index arithmetic
            return entries + view.start, torch.zeros_like(entries)
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

    # ------------------------------------------------------------------------------ ops with weights
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
            kind = "embedding" if op.attr("embedding") else "conv" if op.attr("kernel_size") else "linear"
            ids = self.add_unique_edges(self.node(view.site, neuron), self.node(out, out_n.reshape(-1)), kind,
                                        view.inner * view.outer * k)
            edge = ids[:, None].expand(-1, k)
            if k == 1 and view.inner == 1 and view.outer == 1:      # one weight per edge, in slot 0
                slot = 0
            else:
                slot = (pos[:, None] * k + torch.arange(k)).reshape(-1)
            del pos, neuron
            self.e_place.append((edge.reshape(-1), slot, c.reshape(-1, k).reshape(-1)))
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
            ids = self.add_unique_edges(self.node(src_view.site, neuron), self.node(out, o.reshape(-1)), kind,
                                        src_view.inner * src_view.outer * gates)
            edge = ids[:, None].expand(-1, gates)
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

    # ------------------------------------------------------------------------------ parameter-free ops
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
        """One head node per query head, fed by its query neurons and by the key neurons of the key /
        value head it reads; identity edges from each value neuron to the output neurons of every
        query head reading its key / value head (grouped-query attention; see :mod:`.heads`)."""
        q, k, v = op.inputs
        a = attention_heads(self.spec, op)
        h, n_out = a.heads, a.heads * a.v_dim
        first = self.n_site_nodes + sum(c for c, _, _ in self.extra_nodes)
        self.extra_nodes.append((h, NODE["head"], self.depth[op.output]))
        self.head_nodes.append((first, h, SiteView(op.output, 0, n_out)))
        e = torch.arange(q.length)
        self.const(self.add_edges(self.node(q.site, q.start + e), first + e // a.q_dim, "attn_query", 1), 1.0)
        j = torch.arange(a.k_dim)
        src = (a.kv_of[:, None] * a.k_dim + j).reshape(-1)        # [H * dk], query head by query head
        dst = torch.arange(h).repeat_interleave(a.k_dim)
        self.const(self.add_edges(self.node(k.site, k.start + src), first + dst, "attn_key", 1), 1.0)
        o = torch.arange(n_out)
        self.const(self.add_edges(first + o // a.v_dim, self.node(op.output, o), "attn_head", 1), 1.0)
        if a.fused:       # which neurons of a head's block are values is unknown: the block feeds the head
            e = torch.arange(v.length)
            ids = self.add_edges(self.node(v.site, v.start + e), first + e // a.v_block, "attn_value", 1)
        else:
            src = a.kv_of[o // a.v_dim] * a.v_dim + o % a.v_dim
            ids = self.add_edges(self.node(v.site, v.start + src), self.node(op.output, o), "attn_value", 1)
        self.const(ids, 1.0)


def _as_neuron(use: ParamUse) -> ParamUse:
    """A bias indexes the output neurons: read its 'out' axis as the neuron axis."""
    return ParamUse(use.role, use.name, tuple("neuron" if d == "out" else d for d in use.dims), use.ranges)
