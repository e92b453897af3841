"""Parameter graphs stay O(parameters) when one kernel is much larger than the rest (issue 20).

Padding every edge to the widest kernel costs edges x largest kernel (ResNet-50's 7x7 stem, ViT's
16x16 patch embedding). The graph builder then splits long edges into parallel chunk edges
(``edge_part``); small-kernel networks keep the graphs they always had.
"""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
from architectures import ARCHITECTURES
from weightspace.graph.plan import SMALL_SLOTS, SPLIT_FACTOR, SPLIT_MIN_SLOTS, _decode_src, edge_width, graph_plan
from weightspace.graph.vocab import EDGE

torch.set_num_threads(1)


class PatchNet(nn.Module):
    """A 16x16 patch embedding (256 entries per edge) followed by many single-weight edges."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 16, stride=16)
        self.mix1 = nn.Conv2d(16, 256, 1)
        self.mix2 = nn.Conv2d(256, 256, 1)
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        h = torch.relu(self.mix1(torch.relu(self.patch(x))))
        return self.head(torch.relu(self.mix2(h)).mean((2, 3)))


def _elements(graph) -> int:
    return sum(v.numel() for _, v in graph if torch.is_tensor(v))


def test_one_large_kernel_costs_O_parameters():
    torch.manual_seed(0)
    net = PatchNet().eval()
    spec = ws.WeightSpaceSpec.from_module(net, torch.randn(1, 3, 32, 32))
    n_params = sum(p.numel() for p in net.parameters())
    plan = graph_plan(spec)
    padded = int((plan.edge_part == 0).sum()) * 256        # padding each neuron pair's edge to 256 entries
    assert padded > 50 * n_params
    assert plan.edge_dim == 1, "the patch kernels must be split, not padded"
    g = ws.to_graph(net.state_dict(), spec)
    # every graph tensor together: a handful of numbers per parameter, far below edges x 256
    assert _elements(g) <= 8 * n_params + 16 * plan.num_nodes
    assert g.edge_attr.numel() <= SPLIT_FACTOR * n_params
    assert plan.e_src.numel() <= SPLIT_FACTOR * n_params
    # the 16x16 kernels: 256 parallel edges per (input channel, output channel), parts 0..255, in order
    w = net.patch.weight.detach()
    conv = (g.edge_type == EDGE["conv"]) & (g.edge_index[1] < plan.num_nodes)
    src, dst = g.edge_index[:, conv]
    first_in, first_out = int(src.min()), int(dst.min())
    for o, i in ((0, 0), (5, 2), (15, 1)):
        pair = conv.clone()
        pair[conv] = (src == first_in + i) & (dst == first_out + o)
        assert torch.equal(g.edge_part[pair], torch.arange(256))
        assert torch.equal(g.edge_attr[pair, 0], w[o, i].flatten())
    # exact inverse, one network (gather path) and a batch (copy path)
    back = ws.from_graph(g, spec)
    assert all(torch.equal(back[k][0], v) for k, v in net.state_dict().items())
    nets = [{k: v + 0.1 * torch.randn_like(v) for k, v in net.state_dict().items()} for _ in range(3)]
    space = ws.WeightSpace.from_state_dicts(nets, spec)
    again = ws.from_graph(ws.to_graph(space), spec)
    assert all(torch.equal(again[k], space[k]) for k in spec.names)


def test_split_graph_of_permuted_network_is_relabeled_graph():
    torch.manual_seed(1)
    net = PatchNet().eval()
    spec = ws.WeightSpaceSpec.from_module(net, torch.randn(1, 3, 32, 32))
    sd = net.state_dict()
    perms = ws.random_permutation(spec, generator=torch.Generator().manual_seed(3))
    a, b = ws.to_graph(sd, spec), ws.to_graph(ws.permute(sd, spec, perms), spec)
    idx = ws.node_permutation(spec, perms)
    assert not torch.equal(idx, torch.arange(idx.numel()))
    assert torch.equal(b.x, a.x[idx])
    inv = torch.empty_like(idx)
    inv[idx] = torch.arange(idx.numel())

    def rows(index, g):
        t = torch.stack([index[0], index[1], g.edge_type, g.edge_part]).T.double()
        t = torch.cat([t, g.edge_attr.double()], 1)
        return t[torch.from_numpy(__import__("numpy").lexsort(t.numpy().T[::-1]).copy())]

    assert torch.equal(rows(inv[a.edge_index], a), rows(b.edge_index, b))


def test_small_kernel_architectures_keep_unsplit_graphs(traced_arch):
    for arch in ARCHITECTURES:
        _, _, spec = traced_arch(arch, torch.float32)
        plan = graph_plan(spec)
        assert not plan.edge_part.any(), arch.name
        assert plan.edge_dim == max(int(plan.edge_len.max()) if plan.num_edges else 1, 1), arch.name


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 4, 9, 25, 49, 256]), min_size=1, max_size=6),
       st.lists(st.integers(1, 400_000), min_size=6, max_size=6))
def test_edge_width_is_the_widest_that_fits_the_bound(kinds, counts):
    lengths = torch.cat([torch.full((c,), k) for k, c in zip(kinds, counts)])
    w = edge_width(lengths)
    bound = max(SPLIT_FACTOR * int(lengths.sum()), SPLIT_MIN_SLOTS)

    def slots(width):
        return int(((lengths + width - 1) // width).sum()) * width

    assert w == 1 or w in set(kinds)
    assert slots(w) <= bound or w == 1
    assert all(slots(k) > bound for k in set(kinds) if k > w)


def test_graph_metanets_run_on_split_graphs():
    """NG-GNN / GMN read split graphs like any other: invariant and equivariant heads keep the
    permutation symmetry (chunk edges move with their neurons), and an equivariant head decodes back
    to weights of the right shapes."""
    from weightspace.nn.graph import GMN, NGGNN
    from weightspace.testing import assert_equivariant, assert_invariant

    torch.manual_seed(2)
    net = PatchNet().double().eval()
    spec = ws.WeightSpaceSpec.from_module(net, torch.randn(1, 3, 32, 32, dtype=torch.float64))
    assert graph_plan(spec).edge_dim == 1
    nets = [{k: v + 0.1 * torch.randn_like(v) for k, v in net.state_dict().items()} for _ in range(2)]
    space = ws.WeightSpace.from_state_dicts(nets, spec)
    torch.manual_seed(0)
    inv = NGGNN(hidden=8, layers=1, out_features=2).double()
    assert inv(space).shape == (2, 2)
    assert_invariant(inv, spec, space, kinds=("permutation",), rtol=1e-8)
    torch.manual_seed(0)
    eq = GMN(hidden=8, layers=1, out_features=None).double()
    out = eq(space)
    assert all(out[n].shape == space[n].shape for n in spec.weight_names)
    assert_equivariant(eq, spec, space, kinds=("permutation",), rtol=1e-8)


def _nbytes(obj) -> int:
    return sum(v.nbytes for _, v in obj if torch.is_tensor(v))


def test_graph_bytes_per_weight_are_pinned():
    """Bytes of the produced graph (all its tensors) per weight, for a network with one 16x16 kernel:
    int64 ``edge_index`` (16 B per edge), the value (4 B in float32) and the categorical attributes in
    their narrowest dtypes (edge type, length and chunk number: 4 B together here) per weight-carrying
    edge, plus a bounded cost per node. With int64 attributes (before) it was 44 B per weight. The
    cached plan holds no per-edge index (edges, placements and inverse as sparse second differences,
    :mod:`weightspace.graph.intseq`): its attributes only, a few bytes per weight. Narrow dtypes
    keep ``from_graph`` exact, alone, in a batch and in a batch mixed with another architecture."""
    torch.manual_seed(4)
    net = PatchNet().eval()
    spec = ws.WeightSpaceSpec.from_module(net, torch.randn(1, 3, 32, 32))
    sd = net.state_dict()
    n_weights = sum(v.numel() for v in sd.values())
    plan = graph_plan(spec)
    g = ws.to_graph(sd, spec)
    per_node = 4 * plan.node_dim + 5 * 4                     # node features (float32) + 5 attributes
    assert _nbytes(g) <= 24 * n_weights + per_node * plan.num_nodes, _nbytes(g) / n_weights
    assert g.edge_index.dtype == torch.long and g.edge_type.dtype == torch.int8
    assert g.edge_part.dtype == torch.int16 and int(g.edge_part.max()) == 255     # 256 chunks of one kernel
    packed = sum(s.nbytes + d.nbytes for _, s, d in plan.edges) \
        + sum(a.nbytes + b.nbytes for a, b in plan.e_places + plan.inv_e)
    assert packed < plan.num_edges                  # edges, placements, inverse: < 1 B per edge together
    # a small plan (up to SMALL_SLOTS edge slots) also keeps its gather index decoded: 4 B per slot
    assert plan.e_src_small is not None and plan.num_edges * plan.edge_dim <= SMALL_SLOTS
    assert torch.equal(plan.e_src_small, _decode_src(plan.e_places, plan.num_edges, plan.num_weights,
                                                     plan.constants.numel()))
    plan_bytes = packed + sum(v.nbytes for k, v in vars(plan).items() if torch.is_tensor(v) and k != "e_src_small") \
        + sum(v.nbytes for v in vars(plan.nodes).values())
    assert plan_bytes <= 5 * n_weights + 64 * plan.num_nodes, plan_bytes / n_weights
    back = ws.from_graph(g, spec)
    assert all(torch.equal(back[k][0], v) for k, v in sd.items())
    # batches of one spec (block copies) and mixed with an MLP: edges and attributes line up, exact
    nets = [{k: v + 0.1 * torch.randn_like(v) for k, v in sd.items()} for _ in range(3)]
    space = ws.WeightSpace.from_state_dicts(nets, spec)
    batch = ws.to_graph(space)
    assert torch.equal(batch.edge_type, g.edge_type.repeat(3)) and batch.edge_type.dtype == torch.int8
    assert torch.equal(batch.edge_index[:, plan.num_edges:2 * plan.num_edges], g.edge_index + plan.num_nodes)
    again = ws.from_graph(batch, spec)
    assert all(torch.equal(again[k], space[k]) for k in spec.names)
    mlp = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    mspec = ws.WeightSpaceSpec.from_module(mlp, torch.randn(1, 5))
    mixed = ws.to_graph([(nets[0], spec), (mlp.state_dict(), mspec), (nets[1], spec)])
    outs = ws.from_graph(mixed, [spec, mspec, spec])
    assert all(torch.equal(outs[0][k][0], nets[0][k]) for k in spec.names)
    assert all(torch.equal(outs[1][k][0], v) for k, v in mlp.state_dict().items())
    assert all(torch.equal(outs[2][k][0], nets[1][k]) for k in spec.names)
    assert not torch.equal(outs[0][spec.weight_names[0]], outs[2][spec.weight_names[0]])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**31 + 1, 2**31 - 1), st.integers(-3, 1000), st.integers(1, 300)),
                min_size=1, max_size=12))
def test_intseq_round_trips_piecewise_arithmetic_sequences(runs):
    """The plan's edge encoding (sparse second differences) decodes exactly, in int64 and (values in
    range) int32, and is far smaller than the sequence when the runs are long."""
    from weightspace.graph.intseq import IntSeq

    t = torch.cat([start + step * torch.arange(n) for start, step, n in runs])
    seq = IntSeq.of(t)
    assert torch.equal(seq.tensor(), t)
    if int(t.abs().max()) < 2**31:
        assert torch.equal(seq.tensor(torch.int32), t.int())
    assert seq.nbytes <= t.nbytes
    long_runs = torch.arange(200).repeat_interleave(1000) * 3 + torch.arange(1000).repeat(200)
    assert IntSeq.of(long_runs).nbytes * 100 < long_runs.nbytes


def test_large_plans_decode_in_windows_to_the_same_graph(monkeypatch):
    """Plans over ``SMALL_SLOTS`` edge slots keep no decoded gather index: features are written op by
    op from the packed placements, in windows. Forced here on a small network with tiny windows (so
    every sequence spans several), it gives the same features, and the inverse stays exact."""
    import weightspace.graph.intseq as intseq
    import weightspace.graph.plan as plan_module
    from weightspace.graph.build import _features

    torch.manual_seed(5)
    net = PatchNet().eval()
    spec = ws.WeightSpaceSpec.from_module(net, torch.randn(1, 3, 32, 32))
    nets = [{k: v + 0.1 * torch.randn_like(v) for k, v in net.state_dict().items()} for _ in range(2)]
    space = ws.WeightSpace.from_state_dicts(nets, spec)
    small = graph_plan(spec)
    monkeypatch.setattr(plan_module, "SMALL_SLOTS", 0)
    monkeypatch.setattr(intseq, "CHUNK", 1000)
    big = plan_module._Builder(spec).build()
    assert big.e_src_small is None and torch.equal(big.e_src, small.e_src_small)
    assert any(pos.n > 1000 and pos.dense is None for pos, _ in big.e_places)     # packed, several windows
    for a, b in zip(_features(big, space), _features(small, space)):
        assert torch.equal(a, b)
    assert torch.equal(big.edge_index, small.edge_index)
    back = ws.from_graph(ws.to_graph(space), spec)
    assert all(torch.equal(back[k], space[k]) for k in spec.names)
