"""Graph metanetworks (NG-GNN, GMN, NG-T, ScaleGMN): symmetry on many architectures, mixed batches,
scale / sign invariance by canonicalization, and training."""
from __future__ import annotations

import pytest
import torch

import weightspace as ws
from architectures import ARCHITECTURES
from weightspace.data.datasets import normalization_stats
from weightspace.models import SIREN
from weightspace.nn.graph import GMN, NGGNN, NGT, ScaleGMN, canonicalize
from weightspace.spec.errors import SpecError
from weightspace.testing import assert_equivariant, assert_invariant

PERM = ("permutation",)
ARCH = {a.name: a for a in ARCHITECTURES}
LISTED = ("mlp_relu", "siren", "vgg_bn", "resnet20", "densenet", "tiny_transformer", "transformer_pre")
MODELS = {"nggnn": lambda k: NGGNN(hidden=16, layers=2, out_features=k),
          "gmn": lambda k: GMN(hidden=16, layers=2, out_features=k),
          "ngt": lambda k: NGT(hidden=16, layers=2, heads=4, out_features=k)}


def _space(traced_arch, name, b=2):
    """``(spec, WeightSpace of b perturbed copies)`` of an architecture, float64."""
    model, _, spec = traced_arch(ARCH[name])
    nets = []
    for s in range(b):
        g = torch.Generator().manual_seed(s)
        nets.append({k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) if v.is_floating_point() else v
                     for k, v in model.state_dict().items()})
    return spec, ws.WeightSpace.from_state_dicts(nets, spec)


def _model(kind, k):
    torch.manual_seed(0)
    return MODELS[kind](k).double()


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", LISTED)
def test_invariant_head_is_permutation_invariant(kind, name, traced_arch):
    spec, space = _space(traced_arch, name)
    model = _model(kind, 3)
    out = model(space)
    assert out.shape == (2, 3)
    assert_invariant(model, spec, space, kinds=PERM, rtol=1e-8)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", LISTED)
def test_equivariant_head_is_permutation_equivariant(kind, name, traced_arch):
    spec, space = _space(traced_arch, name)
    model = _model(kind, None)
    out = model(space)
    assert isinstance(out, ws.WeightSpace) and out.spec is spec
    assert all(out[n].shape == space[n].shape for n in spec.weight_names)
    assert_equivariant(model, spec, space, kinds=PERM, rtol=1e-8)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_mixed_architecture_batch_gives_each_member_its_own_output(kind, traced_arch):
    members = []
    for name in ("mlp_relu", "vgg_bn", "transformer_pre"):
        spec, space = _space(traced_arch, name, b=1)
        members.append((space.to_state_dicts()[0], spec))
    model = _model(kind, 4)
    mixed = model(ws.to_graph(members))                    # the widest widths come first: inferred here
    assert mixed.shape == (3, 4)
    for i, (sd, spec) in enumerate(members):
        alone = model(ws.to_graph([sd], spec))
        torch.testing.assert_close(mixed[i:i + 1], alone, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(mixed[0], mixed[1])
    # the equivariant head: each member's weights read back from the mixed output equal its own
    edit = _model(kind, None)
    outs = edit(members)
    for (sd, spec), out in zip(members, outs):
        alone = edit(ws.to_graph([sd], spec), spec=spec)
        for n in spec.weight_names:
            torch.testing.assert_close(out[n], alone[n], rtol=1e-10, atol=1e-12)


def test_graph_input_and_data_input_agree_with_weightspace_input(traced_arch):
    spec, space = _space(traced_arch, "siren")
    model = _model("nggnn", 3)
    torch.testing.assert_close(model(space), model(ws.to_graph(space)))
    torch.testing.assert_close(model(space)[1:], model(ws.to_graph(space.to_state_dicts()[1], spec)))


def test_feature_switches_and_probe_features(traced_arch):
    model, x, spec = traced_arch(ARCH["mlp_relu"])
    _, space = _space(traced_arch, "mlp_relu")
    graph = ws.to_graph(space, probe=(model, x[0]))
    torch.manual_seed(0)
    with_probe = NGGNN(hidden=8, layers=1, out_features=2, probe=True).double()
    bare = NGGNN(hidden=8, layers=1, out_features=2, positional=False, types=False).double()
    assert with_probe(graph).shape == bare(graph).shape == (2, 2)
    assert_invariant(lambda w: with_probe(ws.to_graph(w, probe=(model, x[0]))), spec, space, kinds=PERM, rtol=1e-8)
    with pytest.raises(SpecError, match="probe"):
        with_probe(space)


def test_norm_stats_keep_the_symmetry_and_element_stats_are_refused(traced_arch):
    spec, space = _space(traced_arch, "resnet20")
    torch.manual_seed(0)
    model = GMN(hidden=8, layers=1, out_features=2, norm=normalization_stats(space)).double()
    assert_invariant(model, spec, space, kinds=PERM, rtol=1e-8)
    with pytest.raises(SpecError, match="element"):
        GMN(norm=normalization_stats(space, mode="element"))
    with pytest.raises(SpecError, match="norm"):
        model(ws.to_graph(space))


def test_narrower_and_wider_graphs_after_the_first_batch(traced_arch):
    _, cnn = _space(traced_arch, "vgg_bn")
    _, mlp = _space(traced_arch, "mlp_relu")
    model = _model("gmn", 2)
    model(mlp)                                            # edge width 1 inferred
    with pytest.raises(SpecError, match="widest"):
        model(cnn)                                        # 3x3 kernels need 9 slots


# ----------------------------------------------------------------------------------------- ScaleGMN

SCALE_CASES = [("mlp_relu", ("scaling",)), ("vgg_bn", ("scaling",)), ("small_cnn", ("scaling",)),
               ("siren", ("sign",)), ("mlp_tanh", ("sign",)), ("mlp_relu", None), ("siren", None),
               ("resnet20", None), ("tiny_transformer", None)]


@pytest.mark.parametrize("name,kinds", SCALE_CASES, ids=lambda c: c if isinstance(c, str) else str(c))
def test_scalegmn_is_scale_and_sign_invariant_and_nggnn_is_not(name, kinds, traced_arch):
    spec, space = _space(traced_arch, name)
    torch.manual_seed(0)
    scale_gmn = ScaleGMN(hidden=16, layers=2, out_features=3).double()
    assert_invariant(scale_gmn, spec, space, kinds=kinds, rtol=1e-8)
    plain = _model("nggnn", 3)
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(plain, spec, space, kinds=kinds, rtol=1e-8)


@pytest.mark.parametrize("name", ["mlp_relu", "siren", "vgg_bn"])
def test_scalegmn_equivariant_head(name, traced_arch):
    spec, space = _space(traced_arch, name)
    torch.manual_seed(0)
    model = ScaleGMN(hidden=16, layers=2, out_features=None).double()
    assert_equivariant(model, spec, space, rtol=1e-8)                 # the whole group
    graph_out = model(ws.to_graph(space), spec=spec)
    for n in spec.weight_names:
        torch.testing.assert_close(graph_out[n], model(space)[n])


def test_canonical_form_is_a_fixed_point_and_on_the_orbit(traced_arch):
    spec, space = _space(traced_arch, "mlp_relu")
    canon, factors = canonicalize(space)
    again, f2 = canonicalize(canon)
    for n in spec.weight_names:
        torch.testing.assert_close(again[n], canon[n], rtol=1e-12, atol=1e-14)
    assert all(torch.allclose(f, torch.ones_like(f)) for f in f2.values())
    back = ws.scale(canon, spec, {k: 1 / v for k, v in factors.items()})
    for n in spec.weight_names:
        torch.testing.assert_close(back[n], space[n], rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------- training


def test_small_nggnn_overfits_64_labeled_sirens():
    spec, nets = None, []
    for i in range(64):
        siren = SIREN(2, (32, 32), 1)
        siren.reset_parameters(torch.Generator().manual_seed(i))
        if spec is None:
            spec = ws.WeightSpaceSpec.from_module(siren, torch.zeros(4, 2))
        nets.append(siren.state_dict())
    space = ws.WeightSpace.from_state_dicts(nets, spec)
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)                                  # per-tensor standardization, as for any metanetwork
    model = NGGNN(hidden=32, layers=1, out_features=10, aggregators=("mean", "max", "std"),
                  norm=normalization_stats(space))
    model(space)                                          # infer the input widths before the optimizer
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(400):
        logits = model(space)
        if (logits.argmax(1) == labels).all():
            break
        opt.zero_grad()
        torch.nn.functional.cross_entropy(logits, labels).backward()
        opt.step()
    with torch.no_grad():
        acc = (model(space).argmax(1) == labels).float().mean().item()
    assert acc == 1.0, f"training accuracy {acc:.2f} after {step + 1} steps"


# ----------------------------------------------------------------------------------------- chunked edges


class _StemNet(torch.nn.Module):
    """A 7x7 stem (49 entries per edge) before many single-weight edges."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(2, 4, 7, padding=3)
        self.mix = torch.nn.Conv2d(4, 12, 1)
        self.head = torch.nn.Linear(12, 3)

    def forward(self, x):
        return self.head(torch.relu(self.mix(torch.relu(self.stem(x)))).mean((2, 3)))


@pytest.fixture
def chunked(monkeypatch):
    """``(spec, WeightSpace of 2 networks)`` whose graph splits each 7x7 kernel into 49 parallel edges
    (``edge_part`` 0..48): the padding bound is forced small, as for ResNet-50's stem at full size."""
    import weightspace.graph.plan as plan_module
    monkeypatch.setattr(plan_module, "SPLIT_MIN_SLOTS", 0)
    torch.manual_seed(0)
    net = _StemNet().double()
    spec = ws.WeightSpaceSpec.from_module(net, torch.randn(1, 2, 9, 9, dtype=torch.float64))
    assert int(plan_module.graph_plan(spec).edge_part.max()) == 48
    nets = [{k: v + 0.1 * torch.randn_like(v) for k, v in net.state_dict().items()} for _ in range(2)]
    return spec, ws.WeightSpace.from_state_dicts(nets, spec)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_models_stay_invariant_on_graphs_with_chunked_edges(kind, chunked):
    spec, space = chunked
    report = assert_invariant(_model(kind, 3), spec, space, kinds=PERM, rtol=1e-8)
    assert not report.constant
    assert_equivariant(_model("gmn", None), spec, space, kinds=PERM, rtol=1e-8)


def test_edge_part_code_is_read_only_where_edges_are_split(chunked, traced_arch):
    spec, space = chunked
    model = _model("gmn", 3)
    graph = ws.to_graph(space)
    part = graph.edge_part
    out = model(graph)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64):   # any integer dtype
        graph.edge_part = part.to(dtype)
        torch.testing.assert_close(model(graph), out, rtol=0, atol=0)
    graph.edge_part = (49 - part.long()) % 49                            # another numbering of the chunks
    assert not torch.allclose(model(graph), out, rtol=1e-6, atol=1e-8), "the part numbering must be read"
    model.edge_encoder.edge_part = False
    ignored = model(graph)
    graph.edge_part = part
    torch.testing.assert_close(model(graph), ignored, rtol=0, atol=0)
    assert not torch.allclose(ignored, out, rtol=1e-6, atol=1e-8)
    # graphs without chunks (every part 0) encode exactly as without the feature
    _, plain = _space(traced_arch, "vgg_bn")
    model = _model("gmn", 3)                                             # input widths of this graph
    on = model(plain)
    model.edge_encoder.edge_part = False
    assert torch.equal(model(plain), on)
