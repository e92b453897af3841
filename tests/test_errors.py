"""Bad input gets an error that says what was wrong and where."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import weightspace as ws


class RollBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.roll(torch.relu(self.fc1(x)), 1, dims=-1))


class Rolling(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = RollBlock()

    def forward(self, x):
        return self.block(x)


class Doubler(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class CustomFn(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(Doubler.apply(self.a(x)))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.a(x)
        if h.mean() > 0:
            h = torch.relu(h)
        return self.b(h)


def test_roll_on_hidden_features_names_node_op_and_module():
    with pytest.raises(ws.UnsupportedOpError) as e:
        ws.WeightSpaceSpec.from_module(Rolling(), torch.randn(3, 4))
    msg = str(e.value)
    assert "node 'roll'" in msg and "op torch.roll" in msg and "module 'block'" in msg
    assert "from_axes" in msg
    assert e.value.node == "roll" and e.value.module == "block"


def test_roll_along_positions_is_fine():
    class PosRoll(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(2, 4, 3, padding=1)
            self.o = nn.Linear(4, 1)

        def forward(self, x):
            return self.o(torch.roll(torch.relu(self.c(x)), 2, dims=-1).mean(-1))

    spec = ws.WeightSpaceSpec.from_module(PosRoll(), torch.randn(2, 2, 9))
    assert [g.size for g in spec.groups] == [4]


def test_custom_autograd_function_is_refused_by_name():
    with pytest.raises(ws.UnsupportedOpError) as e:
        ws.WeightSpaceSpec.from_module(CustomFn(), torch.randn(3, 4))
    assert "Doubler.apply" in str(e.value)


def test_custom_autograd_function_with_registered_rule():
    @ws.register_rule(Doubler.apply)
    def _(ctx, x):
        return ctx.elementwise(x, "double", kinds=frozenset({"positive", "sign"}))

    try:
        spec = ws.WeightSpaceSpec.from_module(CustomFn(), torch.randn(3, 4))
        assert [g.size for g in spec.groups] == [6]
    finally:
        from weightspace.spec.trace.context import TARGET_RULES, _key
        TARGET_RULES.pop(_key(Doubler.apply), None)


def test_data_dependent_control_flow():
    with pytest.raises(ws.TraceError) as e:
        ws.WeightSpaceSpec.from_module(Branchy(), torch.randn(3, 4))
    assert "data-dependent control flow" in str(e.value) and "'gt'" in str(e.value)


def test_shape_dependent_control_flow_traces():
    class ShapeBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            if x.dim() == 3:
                x = x.mean(1)
            B, C = x.shape
            return self.b(torch.relu(self.a(x.view(B, C))))

    spec = ws.WeightSpaceSpec.from_module(ShapeBranch(), torch.randn(3, 5, 4))
    assert [g.size for g in spec.groups] == [6]


def test_unknown_op_on_features():
    class Sorted(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.b(torch.cummax(self.a(x), dim=-1).values)

    with pytest.raises(ws.UnsupportedOpError, match="cummax"):
        ws.WeightSpaceSpec.from_module(Sorted(), torch.randn(3, 4))


@pytest.fixture
def mlp_spec():
    return ws.WeightSpaceSpec.mlp([3, 5, 4, 2])


def test_permutation_errors_name_the_group(mlp_spec):
    sd = {p.name: torch.randn(p.shape) for p in mlp_spec.params}
    with pytest.raises(ws.SpecError, match=r"group '0' has shape \(4,\).*5 elements.*0.weight axis 0"):
        ws.permute(sd, mlp_spec, {"0": torch.arange(4)})
    with pytest.raises(ws.SpecError, match="unknown group 'fc9'"):
        ws.permute(sd, mlp_spec, {"fc9": torch.arange(5)})
    with pytest.raises(ws.SpecError, match="not a permutation"):
        ws.permute(sd, mlp_spec, {"0": torch.tensor([0, 0, 1, 2, 3])})
    with pytest.raises(ws.SpecError, match="integer"):
        ws.permute(sd, mlp_spec, {"0": torch.rand(5)})


def test_head_permutations_must_move_whole_heads():
    from architectures import HandAttention
    spec = ws.WeightSpaceSpec.from_module(HandAttention(16, 4), torch.randn(2, 5, 16))
    head = next(g for g in spec.groups if g.heads)
    bad = torch.randperm(head.size)
    while torch.equal(bad.view(4, 4) // 4, torch.arange(4).view(4, 1).expand(4, 4)):
        bad = torch.randperm(head.size)
    sd = HandAttention(16, 4).state_dict()
    with pytest.raises(ws.SpecError, match="does not move whole heads"):
        ws.permute(sd, spec, {head.name: bad})


def test_state_dict_mismatch_names_the_parameter(mlp_spec):
    sd = {p.name: torch.randn(p.shape) for p in mlp_spec.params}
    perms = ws.random_permutation(mlp_spec)
    bad = dict(sd, **{"2.weight": torch.randn(4, 6)})
    with pytest.raises(ws.SpecError, match=r"'2.weight' has shape \(4, 6\).*\(4, 5\)"):
        ws.permute(bad, mlp_spec, perms)
    missing = {k: v for k, v in sd.items() if k != "2.bias"}
    with pytest.raises(ws.SpecError, match="no entry '2.bias'"):
        ws.permute(missing, mlp_spec, perms)
    with pytest.raises(ws.SpecError, match="'extra'"):
        ws.permute(dict(sd, extra=torch.zeros(1)), mlp_spec, perms)


def test_scaling_kinds_are_enforced():
    relu = ws.WeightSpaceSpec.mlp([3, 5, 2], activation="relu")
    tanh = ws.WeightSpaceSpec.mlp([3, 5, 2], activation="tanh")
    sd = {p.name: torch.randn(p.shape) for p in relu.params}
    with pytest.raises(ws.SpecError, match="sign flips are not a symmetry"):
        ws.flip_sign(sd, relu, {"0": -torch.ones(5)})
    with pytest.raises(ws.SpecError, match="positive rescaling is not a symmetry"):
        ws.scale(sd, tanh, {"0": torch.ones(5)})
    with pytest.raises(ws.SpecError, match="must be positive"):
        ws.scale(sd, relu, {"0": -torch.ones(5)})
    assert ws.random_sign_flip(relu) == {} and set(ws.random_scaling(tanh)) == set()
