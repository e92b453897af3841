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
from weightspace.graph.plan import SPLIT_FACTOR, SPLIT_MIN_SLOTS, edge_width, graph_plan
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
