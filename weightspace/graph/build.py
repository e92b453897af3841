"""Networks as parameter graphs (torch_geometric), and back, for whole batches at once.

Representation (after Neural Graphs, Kofinas et al. ICLR 2024, and Graph Metanetworks, Lim et al.
ICLR 2024), drawn from the spec's dataflow alone:

* every neuron of every site is a node; a weight is an edge from its input neuron to its output
  neuron. A convolution kernel is the edge's feature vector (flattened; kernels of different sizes
  are zero-padded to the widest, ``edge_len`` records each edge's size). A Linear reading flattened
  conv features gets one edge per (channel, output neuron) carrying the channel's spatial weights,
  exactly like a kernel: flattening does not multiply nodes.
* size: padding every edge to the widest kernel costs edges x largest kernel, which explodes on real
  checkpoints (ResNet-50's 7x7 stem pads its ~15M 1x1 / 3x3 edges to 49 entries: 0.76G slots for
  25M weights; ViT-B/16's 16x16 patch embedding pads 86M edges to 256). Decision: the width ``Fe``
  is chosen per spec (:func:`weightspace.graph.plan.edge_width`). When padding to the widest edge
  stays within 4x the weights on edges (or is small in absolute terms), nothing changes: SIRENs,
  MLPs, 3x3 CNNs and the test architectures get one edge per neuron pair, as always. Otherwise
  ``Fe`` drops to the widest kernel size that fits that bound (often 1) and each longer edge becomes
  ``ceil(len / Fe)`` parallel edges between the same two neurons, carrying consecutive chunks of the
  kernel; ``edge_part`` numbers the chunks (with ``Fe = 1``: one edge per kernel entry, ``edge_part``
  its offset). Parallel edges move together under every neuron permutation, so equivariance and
  the exact inverse are untouched, and memory is O(weights). We preferred this automatic switch to
  a separate tensor per kernel size because every consumer (encoders, decoders, ScaleGMN, probes)
  keeps reading one ``edge_attr [M, Fe]``; ``edge_part`` is there for encoders that want the offset.
* bytes per edge: ``edge_index`` is int64 (what PyG expects, 16 B), the value 4 B (float32), and the
  categorical attributes (edge / node types, lengths, chunk numbers, depths) are stored in the
  narrowest signed integer dtype that holds them (:func:`weightspace.graph.records.narrow`: int8 for
  types, int16 for the 256 chunks of a 16x16 kernel), about 3 B per edge instead of 24; consumers
  widen before arithmetic or indexing (``.long()``) and embeddings take ``.int()``. The cached plan
  keeps edges, placements and the inverse as sparse second differences (:mod:`.intseq`), decoded
  straight into the graph's buffers: ViT-B/16's 86M-edge graph is built at 2.7 GB peak (9.7 GB
  with int64 attributes and index copies), GPT-2 small's 163M edges at 4.7 GB, 3.9 GB of which is
  the graph itself.
* biases are node features of the output neurons (slot 0, or a vector for parameters with extra
  fixed axes such as positional embeddings ``[T, E]`` -> T values per neuron).
* normalization layers (BatchNorm, LayerNorm, GroupNorm, RMSNorm) get their own nodes: an
  elementwise affine map after normalization is a layer with diagonal weights, so each channel has an
  edge from its input neuron carrying gamma, and beta, running mean and running variance as node
  features (slots 0, 1, 2). Graph Metanetworks model normalization the same way; keeping the
  normalized neurons as separate nodes keeps the statistics and the affine parameters apart.
* residual additions, concatenations, gating products and activation sites are parameter-free
  joins: identity edges (the residual's sign as the edge value).
* attention: the q / k / v / output projections are ordinary linear layers; the parameter-free
  softmax(q k^T) v becomes one node per query head, with edges from that head's query neurons and
  from the key neurons of the key / value head it reads, and to its output neurons, plus an identity
  edge from each value neuron to the output neurons of every query head reading it (grouped-query
  attention: ``graph/heads.py``). This keeps the graph equivariant to head permutations and to the
  within-head permutations of q/k and v/o (Graph Metanetworks likewise give attention dedicated
  parameter-free nodes).
* node and edge types, layer depth (``layer``) and activations are categorical features; input and
  output neurons carry positional identities (``node_pos``), hidden neurons carry none (-1).
* weights that no op of the dataflow describes stay in the graph-level ``extra`` vector, and
  plain buffers (``num_batches_tracked``) in ``buffers``, so :func:`from_graph` inverts exactly.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, Sequence

import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import cumsum

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..symmetry.permutation import check_permutations
from ..spec.blocks import layout_action
from ..symmetry.plan import axis_index
from .copy_plan import can_copy, features_by_copy
from .plan import GraphPlan, NodeAttrs, graph_plan

NODE_ATTRS = tuple(f.name for f in fields(NodeAttrs))      # node_type, layer, node_pos, activation, site
EDGE_ATTRS = ("edge_type", "edge_len", "edge_part")


def _features(plan: GraphPlan, weights: WeightSpace | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Node features ``[B, N, Fn]``, edge features ``[B, M, Fe]`` and extra ``[B, K]`` of a batch
    (a WeightSpace, or flat weights ``[B, P]``): the extended vector (weights, a zero, the constants;
    see ``GraphPlan.extend``), written in one buffer from a WeightSpace, then one gather each."""
    if torch.is_tensor(weights):
        ext = plan.extend(weights)
    else:
        ext = _extended(plan, weights)
    b = ext.shape[0]
    x = ext.index_select(1, plan.x_src)
    if plan.e_src_small is not None:                # small plans: one gather
        e = ext.index_select(1, plan.e_src_small)
    else:
        e = ext.new_zeros(b, plan.num_edges * plan.edge_dim)
        for pos, cols in plan.e_places:             # decoded in windows: no full-size index tensor
            for (_, q), (_, c) in zip(pos.windows(), cols.windows()):
                e.index_copy_(1, q, ext.index_select(1, c))
    extra = ext[:, plan.extra_cols]
    del ext
    return x.view(b, plan.num_nodes, plan.node_dim), e.view(b, plan.num_edges, plan.edge_dim), extra


def _extended(plan: GraphPlan, space: WeightSpace) -> torch.Tensor:
    """``plan.extend(space.flatten())`` without the intermediate flat copy (one full-size buffer)."""
    b = space.batch_size
    blocks = [space[n].reshape(b, -1) for n in space.spec.weight_names]
    return plan.extend(blocks if blocks else space.flatten())


def _buffers(space: WeightSpace, plan: GraphPlan) -> torch.Tensor:
    b = space.batch_size
    if not plan.buffer_names:
        return torch.zeros(b, 0, dtype=torch.float64)
    return torch.cat([space[n].reshape(b, -1).double() for n in plan.buffer_names], dim=1)


def _batch_uniform(space: WeightSpace) -> dict[str, torch.Tensor]:
    """All graph tensors of a one-spec batch, graphs concatenated along nodes / edges."""
    plan = graph_plan(space.spec)
    b, n, m = space.batch_size, plan.num_nodes, plan.num_edges
    x, e, extra = features_by_copy(plan, space) if can_copy(space) else _features(plan, space)
    edge_index = torch.empty(2, b, m, dtype=torch.long)       # decoded straight into the graph's buffer
    if b == 1:
        plan.write_edge_index(edge_index[:, 0])
    else:                      # one graph decoded (1/b of the output), then offset into every slot at once
        one = plan.write_edge_index(torch.empty(2, 1, m, dtype=torch.long)[:, 0])
        torch.add(one.unsqueeze(1), (torch.arange(b) * n).view(1, b, 1), out=edge_index)
    out = {"x": x.reshape(b * n, plan.node_dim), "edge_attr": e.reshape(b * m, plan.edge_dim),
           "edge_index": edge_index.view(2, b * m), "extra": extra, "buffers": _buffers(space, plan)}
    for a in NODE_ATTRS:       # categorical attributes keep the plan's narrow dtypes (see records.narrow)
        out[a] = getattr(plan.nodes, a).repeat(b)
    for a in EDGE_ATTRS:
        out[a] = getattr(plan, a).repeat(b)
    out["_counts"] = (torch.full((b,), n), torch.full((b,), m))
    return out


def _make_batch(t: dict[str, torch.Tensor]) -> Batch:
    nodes, edges = t.pop("_counts")
    b = nodes.numel()
    ptr, eptr = cumsum(nodes), cumsum(edges)
    batch = Batch(batch=torch.arange(b).repeat_interleave(nodes), ptr=ptr, **t)
    gptr = torch.arange(b + 1)
    slices = {"x": ptr, "edge_index": eptr, "edge_attr": eptr, "extra": gptr, "buffers": gptr}
    slices.update({a: ptr for a in NODE_ATTRS})
    slices.update({a: eptr for a in EDGE_ATTRS})
    batch._slice_dict = slices
    zeros = torch.zeros(b, dtype=torch.long)
    batch._inc_dict = {k: zeros for k in slices}
    batch._inc_dict["edge_index"] = ptr[:-1]
    batch._num_graphs = b
    return batch


def to_graph(params: Any, spec: WeightSpaceSpec | None = None, probe: tuple | None = None) -> Data | Batch:
    """Parameter graph(s) of networks.

    * a state dict (one network) and its ``spec`` -> ``Data``
    * a ``WeightSpace`` (B networks of one spec) -> ``Batch`` of B graphs, built in one pass
    * a list of state dicts and one ``spec`` -> ``Batch``
    * a list of ``(state dict, spec)`` pairs, specs possibly different -> ``Batch`` (graphs in order)

    Graph fields: ``x [N, Fn]`` (biases, norm parameters), ``edge_index [2, M]`` (input neuron ->
    output neuron), ``edge_attr [M, Fe]`` (weights, kernels), ``node_type``, ``layer``, ``node_pos``,
    ``activation``, ``site`` (per node), ``edge_type``, ``edge_len``, ``edge_part`` (per edge), ``extra [1, K]`` and
    ``buffers [1, Kb]`` (per graph). Categorical attributes come in the narrowest integer dtype that
    holds them (int8 / int16 / int32; ``edge_index`` is int64). See the module docstring.

    ``probe=(module, inputs)`` adds ``probe [N, S]``: every neuron's value on the S probe inputs
    (:func:`probe_features`; runs each network, so it costs a forward pass per network).
    """
    if probe is not None:
        from .probe import probe_features
        if isinstance(params, (list, tuple)) and params and isinstance(params[0], tuple):
            raise SpecError("probe features for a batch of different specs: compute them per spec")
        space = params if isinstance(params, WeightSpace) else None
        graph = to_graph(params, spec)
        s = space.spec if space is not None else spec
        if space is None and not isinstance(params, Mapping):
            space = WeightSpace.from_state_dicts(list(params), spec)
        elif space is None:
            space = WeightSpace.from_state_dicts([params], spec)
        graph.probe = probe_features(probe[0], s, probe[1], space)
        return graph
    if isinstance(params, WeightSpace):
        return _make_batch(_batch_uniform(params))
    if isinstance(params, Mapping):
        if spec is None:
            raise SpecError("to_graph of a state dict needs its spec")
        spec.check_state_dict(params, what="state dict #0")
        one = WeightSpace(spec, {p.name: torch.as_tensor(params[p.name]).unsqueeze(0) for p in spec.params})
        t = _batch_uniform(one)                      # views of the state dict: the features are gathered copies
        del t["_counts"]
        return Data(**t)           # what Batch.get_example(0) gives, without copying edge_index again
    if isinstance(params, Sequence) and len(params) > 0:
        if isinstance(params[0], tuple):
            return _mixed([p[0] for p in params], [p[1] for p in params])
        if spec is None:
            raise SpecError("to_graph of a list of state dicts needs their spec (or pass (state dict, spec) pairs)")
        return _make_batch(_batch_uniform(WeightSpace.from_state_dicts(list(params), spec)))
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        raise SpecError(f"to_graph got an empty {type(params).__name__}: pass at least one state dict "
                        "(or (state dict, spec) pair), or a WeightSpace")
    raise SpecError(f"to_graph expects a state dict, a WeightSpace or a list of state dicts, "
                    f"got {type(params).__name__}")


def _mixed(state_dicts: list, specs: list[WeightSpaceSpec]) -> Batch:
    """Graphs of networks with different specs, in input order: built per spec, then interleaved by
    index arithmetic."""
    groups: dict[int, list[int]] = {}
    keys: list[WeightSpaceSpec] = []
    for i, s in enumerate(specs):
        for k, known in enumerate(keys):
            if known is s or known == s:
                groups[k].append(i)
                break
        else:
            keys.append(s)
            groups[len(keys) - 1] = [i]
    parts = [(_batch_uniform(WeightSpace.from_state_dicts([state_dicts[i] for i in idx], keys[k])), idx)
             for k, idx in groups.items()]
    b = len(specs)
    order = torch.cat([torch.tensor(idx) for _, idx in parts])           # graph position in the concatenation
    nodes = torch.cat([p["_counts"][0] for p, _ in parts])
    edges = torch.cat([p["_counts"][1] for p, _ in parts])
    fn = max(p["x"].shape[1] for p, _ in parts)
    fe = max(p["edge_attr"].shape[1] for p, _ in parts)
    kx = max(p["extra"].shape[1] for p, _ in parts)
    kb = max(p["buffers"].shape[1] for p, _ in parts)
    pad = lambda t, w: torch.nn.functional.pad(t, (0, w - t.shape[1]))  # noqa: E731
    cat = {"x": torch.cat([pad(p["x"], fn) for p, _ in parts]),
           "edge_attr": torch.cat([pad(p["edge_attr"], fe) for p, _ in parts]),
           "extra": torch.cat([pad(p["extra"], kx) for p, _ in parts]),
           "buffers": torch.cat([pad(p["buffers"], kb) for p, _ in parts])}
    for a in NODE_ATTRS + EDGE_ATTRS:
        cat[a] = torch.cat([p[a] for p, _ in parts])
    node_start, edge_start = cumsum(nodes)[:-1], cumsum(edges)[:-1]
    node_off, base_n = [], 0
    for p, _ in parts:  # edge indices inside each part count from the part's first node
        cn, ce = p["_counts"]
        node_off.append(torch.full((int(ce.sum()),), base_n))
        base_n += int(cn.sum())
    edge_index = torch.cat([p["edge_index"] for p, _ in parts], dim=1) + torch.cat(node_off)
    rank = torch.empty(b, dtype=torch.long)
    rank[order] = torch.arange(b)                                       # input index -> concatenation index
    new_nodes, new_edges = nodes[rank], edges[rank]
    node_perm = _ranges(node_start[rank], new_nodes)
    edge_perm = _ranges(edge_start[rank], new_edges)
    inv_node = torch.empty_like(node_perm)
    inv_node[node_perm] = torch.arange(node_perm.numel())
    out = {k: (v[rank] if k in ("extra", "buffers") else v[edge_perm] if k in ("edge_attr",) + EDGE_ATTRS
               else v[node_perm]) for k, v in cat.items()}
    out["edge_index"] = inv_node[edge_index[:, edge_perm]]
    out["_counts"] = (new_nodes, new_edges)
    return _make_batch(out)


def _ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``arange(s, s + l)`` for each pair, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    begin = cumsum(lengths)[:-1]
    return torch.repeat_interleave(starts - begin, lengths) + torch.arange(total)


def from_graph(graph: Data | Batch, spec: WeightSpaceSpec | Sequence[WeightSpaceSpec]) -> WeightSpace | list:
    """The exact inverse of :func:`to_graph`: a ``WeightSpace`` (one spec), or a list of one-network
    WeightSpaces for a batch of different specs (pass one spec per graph)."""
    if isinstance(spec, (list, tuple)):
        graphs = graph.to_data_list() if isinstance(graph, Batch) else [graph]
        if len(graphs) != len(spec):
            raise SpecError(f"{len(graphs)} graphs but {len(spec)} specs")
        return [from_graph(g, s) for g, s in zip(graphs, spec)]
    plan = graph_plan(spec)
    b = graph.num_graphs if isinstance(graph, Batch) else 1
    if graph.x.shape[0] != b * plan.num_nodes or graph.edge_index.shape[1] != b * plan.num_edges:
        raise SpecError(f"the graph has {graph.x.shape[0]} nodes and {graph.edge_index.shape[1]} edges; "
                        f"{b} graph(s) of this spec have {b * plan.num_nodes} and {b * plan.num_edges}")
    x = graph.x[:, :plan.node_dim].reshape(b, -1)
    e = graph.edge_attr[:, :plan.edge_dim].reshape(b, -1)
    flat = x.new_empty(b, plan.num_weights)
    flat[:, plan.inv_x_cols] = x[:, plan.inv_x_pos]
    for cols, pos in plan.inv_e:                    # first placement of each weight, decoded in windows
        for (_, c), (_, q) in zip(cols.windows(), pos.windows()):
            flat.index_copy_(1, c, e.index_select(1, q))
    flat[:, plan.extra_cols] = graph.extra.reshape(b, -1)[:, :plan.extra_cols.numel()].to(flat.dtype)
    buffers = None
    if plan.buffer_names:
        vals = graph.buffers.reshape(b, -1)
        tensors, off = {}, 0
        for name in plan.buffer_names:
            p = spec[name]
            tensors[name] = vals[:, off:off + p.numel].reshape(b, *p.shape).to(getattr(torch, p.dtype))
            off += p.numel
        buffers = WeightSpace.__new__(WeightSpace)
        buffers.spec, buffers.tensors = spec, tensors
    return WeightSpace.unflatten(flat, spec, buffers)


def node_permutation(spec: WeightSpaceSpec, perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Node relabeling that a group element induces: the graph of ``permute(w, spec, perms)`` is the
    graph of ``w`` with node ``i`` taking the features and edges of node ``index[i]``."""
    perms = check_permutations(spec, perms)
    plan = graph_plan(spec)
    index = torch.arange(plan.num_nodes)
    for site in spec.dataflow.sites:
        idx = axis_index(layout_action(site.layout), perms, index.device, None)
        if idx is not None:
            start = int(plan.site_offset[site.id])
            index[start:start + site.size] = start + idx
    for first, heads, view in plan.head_nodes:  # a head node moves with its block of the attention output
        start = int(plan.site_offset[view.site]) + view.start
        moved = index[start:start + view.length].view(heads, -1)[:, 0] - start
        index[first:first + heads] = first + torch.div(moved, view.length // heads, rounding_mode="floor")
    return index
