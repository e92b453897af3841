"""Parameter graphs: exact inverse, equivariance, mixed batches, known edges."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import weightspace as ws
from architectures import ARCHITECTURES
from weightspace.graph.vocab import EDGE, NODE
from weightspace.models import SIREN, VGG, mlp


@pytest.fixture
def traced(traced_arch):
    """(spec, three different networks of the architecture), float32."""
    def get(arch):
        model, _, spec = traced_arch(arch, torch.float32)
        nets = []
        for s in range(3):
            g = torch.Generator().manual_seed(s)
            nets.append({k: v + torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v
                         for k, v in model.state_dict().items()})
        return spec, nets
    return get


def _sorted_edges(index: torch.Tensor, attr: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    t = torch.cat([index.T.double(), types[:, None].double(), attr.double()], 1)
    order = np.lexsort(t.numpy().T[::-1])
    return t[torch.from_numpy(order.copy())]


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_round_trip_is_exact(arch, traced):
    spec, nets = traced(arch)
    space = ws.WeightSpace.from_state_dicts(nets, spec)
    back = ws.from_graph(ws.to_graph(space), spec)
    assert all(torch.equal(back[k], space[k]) for k in spec.names)
    one = ws.from_graph(ws.to_graph(nets[1], spec), spec)
    assert all(torch.equal(one[k][0], nets[1][k]) for k in spec.names)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_graph_of_permuted_network_is_relabeled_graph(arch, traced):
    spec, nets = traced(arch)
    g = torch.Generator().manual_seed(7)
    perms = ws.random_permutation(spec, generator=g)
    a = ws.to_graph(nets[0], spec)
    b = ws.to_graph(ws.permute(nets[0], spec, perms), spec)
    idx = ws.node_permutation(spec, perms)
    assert not torch.equal(idx, torch.arange(idx.numel())), "some hidden node must move"
    for attr in ("x", "node_type", "layer", "node_pos", "activation", "site"):
        assert torch.equal(getattr(b, attr), getattr(a, attr)[idx]), attr
    inv = torch.empty_like(idx)
    inv[idx] = torch.arange(idx.numel())
    assert torch.equal(_sorted_edges(inv[a.edge_index], a.edge_attr, a.edge_type),
                       _sorted_edges(b.edge_index, b.edge_attr, b.edge_type))
    moved_inputs = idx[a.node_type == NODE["input"]]
    assert torch.equal(moved_inputs, (a.node_type == NODE["input"]).nonzero().flatten())


def test_mixed_batch_round_trips_each_member(traced):
    chosen = [a for a in ARCHITECTURES if a.name in ("mlp_relu", "vgg_bn", "tiny_transformer", "siren")]
    pairs, specs = [], []
    for i, arch in enumerate(chosen + chosen[:2]):
        spec, nets = traced(arch)
        pairs.append((nets[i % 3], spec))
        specs.append(spec)
    batch = ws.to_graph(pairs)
    assert isinstance(batch, Batch) and batch.num_graphs == len(pairs)
    back = ws.from_graph(batch, specs)
    for (sd, spec), w in zip(pairs, back):
        assert all(torch.equal(w[k][0], sd[k]) for k in spec.names)
    for i, (sd, spec) in enumerate(pairs):  # members equal their own graphs
        single = ws.to_graph(sd, spec)
        member = batch.get_example(i)
        assert torch.equal(member.edge_index, single.edge_index)
        assert torch.equal(member.x[:, :single.x.shape[1]], single.x)
        assert torch.equal(member.edge_attr[:, :single.edge_attr.shape[1]], single.edge_attr)


def test_batch_members_equal_single_graphs(traced):
    spec, nets = traced(ARCHITECTURES[7])  # resnet20
    batch = ws.to_graph(ws.WeightSpace.from_state_dicts(nets, spec))
    for i, sd in enumerate(nets):
        single, member = ws.to_graph(sd, spec), batch.get_example(i)
        for k in ("x", "edge_index", "edge_attr", "node_type", "edge_type", "extra", "buffers"):
            assert torch.equal(getattr(member, k), getattr(single, k)), k
    assert batch.to_data_list()[2].num_nodes == single.num_nodes


def test_different_networks_give_different_graphs(traced):
    spec, nets = traced(ARCHITECTURES[0])
    a, b = ws.to_graph(nets[0], spec), ws.to_graph(nets[1], spec)
    assert torch.equal(a.edge_index, b.edge_index)
    assert not torch.equal(a.edge_attr, b.edge_attr) and not torch.equal(a.x, b.x)


def test_mlp_edges_carry_the_weights():
    torch.manual_seed(0)
    model = mlp([3, 4, 2])
    spec = ws.WeightSpaceSpec.mlp([3, 4, 2])
    g = ws.to_graph(model.state_dict(), spec)
    assert g.num_nodes == 9 and g.num_edges == 3 * 4 + 4 * 2
    w = model[0].weight.detach()
    for e in range(g.num_edges):
        src, dst = g.edge_index[:, e].tolist()
        if src < 3:  # input neuron src -> hidden neuron dst - 3
            assert g.edge_attr[e, 0] == w[dst - 3, src]
    assert torch.equal(g.x[3:7, 0], model[0].bias.detach())
    assert g.node_pos.tolist() == [0, 1, 2, -1, -1, -1, -1, 0, 1]
    assert g.node_type.tolist() == [NODE["input"]] * 3 + [NODE["hidden"]] * 4 + [NODE["output"]] * 2
    assert g.layer.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_kernels_and_flattening_are_edge_vectors():
    model = VGG((2, 3), in_channels=1, image_size=8, num_classes=2, hidden=4)
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(1, 1, 8, 8))
    g = ws.to_graph(model.state_dict(), spec)
    conv = g.edge_type == EDGE["conv"]
    assert bool((g.edge_len[conv] == 9).all())
    flat = (g.edge_type == EDGE["linear"]) & (g.edge_len == 4)  # 3 channels x (2x2) into 4 neurons
    assert int(flat.sum()) == 3 * 4
    w = model.classifier[1].weight.detach().view(4, 3, 4)
    e = flat.nonzero()[0].item()
    vec = g.edge_attr[e, :4]
    assert any(torch.equal(vec, w[o, c]) for o in range(4) for c in range(3))


def test_attention_has_head_nodes():
    from architectures import HandAttention
    model = HandAttention(d=16, h=4)
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(2, 5, 16))
    g = ws.to_graph(model.state_dict(), spec)
    heads = (g.node_type == NODE["head"]).nonzero().flatten()
    assert heads.numel() == 4
    into = torch.isin(g.edge_index[1], heads)
    assert int(into.sum()) == 2 * 16  # each q and k neuron feeds its head
    assert int((g.edge_type == EDGE["attn_value"]).sum()) == 16


def test_probe_features_are_site_activations():
    torch.manual_seed(0)
    model = SIREN()
    spec = ws.WeightSpaceSpec.from_module(model, torch.rand(4, 2))
    probes = torch.rand(6, 2) * 2 - 1
    feats = ws.probe_features(model, spec, probes)
    assert feats.shape == (67, 6)
    h1 = torch.sin(30 * model.layers[0](probes))
    assert torch.allclose(feats[2:34], h1.T.detach(), atol=1e-6)
    batch = ws.WeightSpace.from_modules([model, SIREN()], spec)
    assert ws.probe_features(SIREN(), spec, probes, batch).shape == (2 * 67, 6)
    g = ws.to_graph(batch, probe=(SIREN(), probes))
    assert g.probe.shape == (2 * 67, 6) and torch.allclose(g.probe[:67], feats)


def test_plot_graph_writes_a_png(tmp_path):
    from weightspace.models import ResidualCNN
    model = ResidualCNN()
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(1, 1, 6, 6))
    path = ws.plot_graph(ws.to_graph(model.state_dict(), spec), tmp_path / "g.png")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"


def test_spec_without_dataflow_is_refused():
    spec = ws.WeightSpaceSpec.from_axes({"w": ((3, 2), ("h", None))})
    with pytest.raises(ws.SpecError, match="no dataflow"):
        ws.to_graph({"w": torch.zeros(3, 2)}, spec)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_block_copies_build_the_same_features_as_the_generic_gather(arch, traced):
    from weightspace.graph.build import _features
    from weightspace.graph.copy_plan import copy_plan, features_by_copy
    from weightspace.graph.plan import graph_plan
    spec, nets = traced(arch)
    space = ws.WeightSpace.from_state_dicts(nets, spec)
    plan = graph_plan(spec)
    fast = features_by_copy(plan, space)
    generic = _features(plan, space.flatten())
    assert all(torch.equal(a, b) for a, b in zip(fast, generic))
    cp = copy_plan(spec)
    if any(len(spec[n].shape) >= 2 and spec[n].numel >= 64 for n in spec.weight_names):
        assert cp.runs, "conv / linear layers should be copied as blocks, not gathered"
