"""Hand-written specs, serialization, printing."""
from __future__ import annotations

import torch
import torch.nn as nn

import weightspace as ws
from architectures import ARCHITECTURES
from helpers import outputs, rel_err


class ConvFlat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def test_from_axes_matches_tracing_and_preserves_function():
    model = ConvFlat().double()
    axes = {"conv.weight": ("c", None, None, None), "conv.bias": ("c",), "fc.weight": ("h", "c"),
            "fc.bias": ("h",), "out.weight": (None, "h"), "out.bias": (None,)}
    spec = ws.WeightSpaceSpec.from_axes(axes, model.state_dict(), activations={"c": "relu", "h": "relu"})
    assert spec["fc.weight"].axes[1] == (ws.Segment("c", 4, 25),)
    traced = ws.WeightSpaceSpec.from_module(model, torch.randn(2, 1, 5, 5, dtype=torch.float64))
    assert [p.axes for p in traced.params] == [
        tuple(None if a is None else tuple(ws.Segment({"c": "conv", "h": "fc"}[s.group], s.size, s.inner) for s in a)
              for a in p.axes) for p in spec.params]
    x = (torch.randn(3, 1, 5, 5, dtype=torch.float64),)
    moved = ws.permute(model.state_dict(), spec, ws.random_permutation(spec))
    assert rel_err(outputs(model, x), outputs(model, x, moved)) < 1e-12


def test_from_axes_rejects_inconsistent_sizes():
    import pytest
    with pytest.raises(ws.SpecError, match="'b' axis 0 has length 7"):
        ws.WeightSpaceSpec.from_axes({"a": ((4, 3), ("g", None)), "b": ((7,), ("g",))})


def test_json_round_trip():
    for arch in ARCHITECTURES[::4]:
        spec = ws.WeightSpaceSpec.from_module(arch.build(), arch.inputs(torch.Generator().manual_seed(0)))
        assert ws.WeightSpaceSpec.from_json(spec.to_json()) == spec


def test_printing_is_a_readable_table():
    text = str(ws.WeightSpaceSpec.mlp([2, 4, 1], activation="tanh"))
    assert "0.weight" in text and "(4, 2)" in text and "[0, -]" in text and "tanh" in text and "sign" in text
    assert repr(ws.WeightSpaceSpec.mlp([2, 4, 1])).startswith("WeightSpaceSpec(4 tensors, 17 weights")


def test_site_activations_match_the_dataflow():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(2, 3))
    x = torch.randn(11, 3)
    acts = ws.site_activations(model, x, spec)
    sites = {s.name: s.id for s in spec.dataflow.sites}
    assert torch.allclose(acts[sites["0"]], torch.relu(model[0](x)))
    assert torch.allclose(acts[sites["2"]], model(x))
    from weightspace.models import resnet20
    net = resnet20(width=4)
    spec = ws.WeightSpaceSpec.from_module(net, torch.randn(2, 3, 8, 8))
    acts = ws.site_activations(net, torch.randn(5, 3, 8, 8), spec)
    for s in spec.dataflow.sites:
        if s.id in acts:
            assert acts[s.id].shape[-1] == s.size
    hidden = [s for s in spec.dataflow.sites if s.kind == "hidden"]
    assert sum(s.id in acts for s in hidden) >= len(hidden) - 2
