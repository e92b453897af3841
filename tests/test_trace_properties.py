"""Property tests over random MLP and CNN shapes (hypothesis)."""
from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightspace as ws
from helpers import changed, outputs, rel_err

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "leaky": lambda: nn.LeakyReLU(0.2), "sigmoid": nn.Sigmoid,
        "silu": nn.SiLU, "identity": nn.Identity}
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(model: nn.Module, x: torch.Tensor, seed: int):
    model = model.double().eval()
    x = x.double()
    spec = ws.WeightSpaceSpec.from_module(model, x)
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    moved = ws.permute(sd, spec, ws.random_permutation(spec, generator=g))
    moved = ws.scale(moved, spec, ws.random_scaling(spec, generator=g))
    moved = ws.flip_sign(moved, spec, ws.random_sign_flip(spec, generator=g))
    assert rel_err(outputs(model, (x,)), outputs(model, (x,), moved)) < 1e-10
    if any(grp.size > 1 for grp in spec.hidden_groups):
        # with several hidden neurons some weight moves, unless the drawn permutations are identities
        perms = ws.random_permutation(spec, generator=g)
        if any(not torch.equal(p, torch.arange(p.numel())) for p in perms.values()):
            assert changed(sd, ws.permute(sd, spec, perms))
    return spec


@SETTINGS
@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=6), act=st.sampled_from(sorted(ACTS)),
       bias=st.booleans(), norm=st.sampled_from(["none", "batch", "layer"]), seed=st.integers(0, 2**16))
def test_random_mlps(widths, act, bias, norm, seed):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2:
            if norm == "batch":
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            elif norm == "layer":
                layers.append(nn.LayerNorm(widths[i + 1]))
            layers.append(ACTS[act]())
    model = nn.Sequential(*layers)
    if norm == "batch":  # non-trivial running statistics
        model.train()
        with torch.no_grad():
            model(torch.randn(16, widths[0]))
    spec = check(model, torch.randn(5, widths[0]), seed)
    if norm == "none":
        hidden = [w for w in widths[1:-1]]
        assert [g.size for g in spec.groups] == hidden


@st.composite
def cnns(draw):
    depth = draw(st.integers(1, 3))
    cin = draw(st.integers(1, 3))
    size = draw(st.sampled_from([6, 8, 9]))
    layers: list[nn.Module] = []
    c, s = cin, size
    for _ in range(depth):
        cout = draw(st.integers(1, 6))
        k = draw(st.sampled_from([1, 3]))
        stride = draw(st.sampled_from([1, 2]))
        layers.append(nn.Conv2d(c, cout, k, stride=stride, padding=k // 2, bias=draw(st.booleans())))
        s = (s + 2 * (k // 2) - k) // stride + 1
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(cout))
        layers.append(ACTS[draw(st.sampled_from(["relu", "tanh", "leaky", "identity"]))]())
        pool = draw(st.sampled_from(["none", "max", "avg"]))
        if pool != "none" and s >= 2:
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            s //= 2
        c = cout
    head = draw(st.sampled_from(["flatten", "global"]))
    if head == "flatten":
        layers += [nn.Flatten(), nn.Linear(c * s * s, draw(st.integers(1, 5)))]
    else:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, draw(st.integers(1, 5)))]
    return nn.Sequential(*layers), cin, size


@SETTINGS
@given(net=cnns(), seed=st.integers(0, 2**16))
def test_random_cnns(net, seed):
    model, cin, size = net
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    check(model, torch.randn(3, cin, size, size), seed)


@SETTINGS
@given(blocks=st.integers(1, 3), width=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_random_residual_mlps(blocks, width, seed):
    """Residual additions tie all writers of the stream into one group."""
    torch.manual_seed(seed)

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(4, width)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(),
                                                      nn.Linear(2 * width, width)) for _ in range(blocks))
            self.out = nn.Linear(width, 2)

        def forward(self, x):
            h = self.inp(x)
            for b in self.blocks:
                h = h + b(h)
            return self.out(torch.relu(h))

    spec = check(Res(), torch.randn(5, 4), seed)
    stream = spec["inp.weight"].axes[0][0].group
    for i in range(blocks):
        assert spec[f"blocks.{i}.2.weight"].axes[0][0].group == stream
    assert len(spec.groups) == 1 + blocks
