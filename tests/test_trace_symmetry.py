"""The defining property of every spec: a group element applied to the weights leaves the network's
function unchanged (eval mode, float64, relative error < 1e-10), and it really moves weights."""
from __future__ import annotations

import pytest
import torch

import weightspace as ws
from architectures import ARCHITECTURES
from helpers import changed, outputs, rel_err, single_group_element

TOL = 1e-10


@pytest.fixture
def traced(traced_arch):
    return traced_arch


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_random_group_element_preserves_function(arch, traced):
    model, x, spec = traced(arch)
    g = torch.Generator().manual_seed(2)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    moved = ws.permute(sd, spec, ws.random_permutation(spec, generator=g))
    moved = ws.scale(moved, spec, ws.random_scaling(spec, generator=g))
    moved = ws.flip_sign(moved, spec, ws.random_sign_flip(spec, generator=g))
    assert rel_err(outputs(model, x), outputs(model, x, moved)) < TOL
    assert spec.hidden_groups, "every architecture here has hidden neurons"
    assert changed(sd, moved), "a group element must move weights"


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_each_group_alone_is_a_symmetry_and_moves_weights(arch, traced):
    model, x, spec = traced(arch)
    g = torch.Generator().manual_seed(3)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    y = outputs(model, x)
    for group in spec.groups:
        if group.size < 2 or (group.heads is not None and group.heads[1] < 2):
            continue
        perms = single_group_element(spec, group.name, g)
        moved = ws.permute(sd, spec, perms)
        assert changed(sd, moved), f"group {group.name} moves no weight"
        assert rel_err(y, outputs(model, x, moved)) < TOL, f"group {group.name} is not a symmetry"


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_each_scaling_alone_is_a_symmetry(arch, traced):
    model, x, spec = traced(arch)
    g = torch.Generator().manual_seed(4)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    y = outputs(model, x)
    for s in spec.scalings:
        if s.positive:
            moved = ws.scale(sd, spec, {s.name: torch.rand(s.size, generator=g, dtype=torch.float64) + 0.5})
        else:
            moved = ws.flip_sign(sd, spec, {s.name: -torch.ones(s.size, dtype=torch.float64)})
        assert changed(sd, moved), f"scaling {s.name} moves no weight"
        assert rel_err(y, outputs(model, x, moved)) < TOL, f"scaling {s.name} is not a symmetry"


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a.groups is not None], ids=lambda a: a.name)
def test_known_number_of_groups(arch, traced):
    _, _, spec = traced(arch)
    assert len(spec.groups) == arch.groups


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_inputs_and_outputs_are_never_permuted(arch, traced):
    """Axes that read network inputs or write network outputs carry no group."""
    _, _, spec = traced(arch)
    flow = spec.dataflow
    for op in flow.ops:
        for use in op.params:
            p = spec[use.name]
            for axis, role in enumerate(use.dims):
                a, b = use.ranges[axis]
                lay = p.axes[axis]
                if role == "in" and flow.site(op.inputs[0].site).kind == "input":
                    assert _fixed_range(lay, a, b), f"{use.name} axis {axis} reads inputs but is permuted"
                if role == "out" and flow.site(op.output).kind == "output":
                    assert _fixed_range(lay, a, b), f"{use.name} axis {axis} writes outputs but is permuted"
    for site in flow.sites:
        if site.kind in ("input", "output"):
            assert all(s.group is None for s in site.layout), site.name


def _fixed_range(layout, a: int, b: int) -> bool:
    if layout is None:
        return True
    pos = 0
    for s in layout:
        if s.group is not None and pos < b and pos + s.length > a:
            return False
        pos += s.length
    return True


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if not a.computed_weights], ids=lambda a: a.name)
def test_dataflow_covers_every_parameter(arch, traced):
    """Every entry of every learned parameter is used by some op of the dataflow (weights computed in
    forward by a parametrization are the exception: graphs keep them as graph-level extras)."""
    _, _, spec = traced(arch)
    covered: dict[str, torch.Tensor] = {}
    for op in spec.dataflow.ops:
        for use in op.params:
            mask = covered.setdefault(use.name, torch.zeros(spec[use.name].shape, dtype=torch.bool))
            mask[tuple(slice(a, b) for a, b in use.ranges)] = True
    for p in spec.params:
        if p.role == "parameter":
            assert p.name in covered and bool(covered[p.name].all()), f"{p.name} is not covered by the dataflow"


@pytest.mark.parametrize("arch", ARCHITECTURES[:8], ids=lambda a: a.name)
def test_inverse_and_composition(arch, traced):
    model, x, spec = traced(arch)
    g = torch.Generator().manual_seed(5)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    p1, p2 = ws.random_permutation(spec, generator=g), ws.random_permutation(spec, generator=g)
    back = ws.permute(ws.permute(sd, spec, p1), spec, ws.invert_permutation(p1))
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    two_steps = ws.permute(ws.permute(sd, spec, p1), spec, p2)
    one_step = ws.permute(sd, spec, ws.compose_permutations(p1, p2))
    assert all(torch.equal(two_steps[k], one_step[k]) for k in sd)


def test_plain_mlp_gets_exactly_its_hidden_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 7), torch.nn.ReLU(), torch.nn.Linear(7, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 2))
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(4, 3))
    assert [(g.name, g.size, g.activation, g.heads) for g in spec.groups] == [("0", 7, "relu", None),
                                                                               ("2", 5, "relu", None)]
    assert spec["0.weight"].axes == ((ws.Segment("0", 7),), None)
    assert spec["2.weight"].axes == ((ws.Segment("2", 5),), (ws.Segment("0", 7),))
    assert spec["4.weight"].axes == (None, (ws.Segment("2", 5),))
    assert spec["4.bias"].axes == (None,)
    assert spec == ws.WeightSpaceSpec.mlp([3, 7, 5, 2])
    assert [(s.name, s.positive, s.sign) for s in spec.scalings] == [("0", True, False), ("2", True, False)]


def test_attention_heads_are_head_structured_groups():
    from architectures import HandAttention
    spec = ws.WeightSpaceSpec.from_module(HandAttention(d=16, h=4), torch.randn(2, 5, 16))
    heads = [g for g in spec.groups if g.heads is not None]
    assert len(heads) == 2 and {g.heads for g in heads} == {(heads[0].heads[0], 4)}
    parent = spec.group(heads[0].heads[0])
    assert parent.size == 4
    qk = spec["q.weight"].axes[0][0].group
    assert spec["k.weight"].axes[0][0].group == qk            # q and k share the within-head permutation
    assert spec["v.weight"].axes[0][0].group != qk            # v has its own, tied to o's input
    assert spec["o.weight"].axes[1][0].group == spec["v.weight"].axes[0][0].group


def test_tracing_leaves_the_model_in_its_mode():
    model = ARCHITECTURES[3].build().train()
    ws.WeightSpaceSpec.from_module(model, torch.randn(4, 6))
    assert model.training
