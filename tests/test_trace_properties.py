"""Property tests over random MLP and CNN shapes (hypothesis)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightspace as ws
from helpers import changed, outputs, rel_err, single_group_element

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


# ------------------------------------------------------------------ slices of a hidden layer (issue 19)
# A slice of a feature axis splits the axis's group at the slice's ends (weightspace/spec/trace/rules/
# indexing.py); a size-1 slice broadcast against other features pins its neuron. Every use below reads
# the slice in a way that depends on which neurons lie inside it.
NOUT = 3
SLICE_USES = {
    "sum": lambda m, h, s: m.b(h) + s.sum(1, keepdim=True),
    "max": lambda m, h, s: m.b(h) + s.amax(1, keepdim=True),
    "gate": lambda m, h, s: m.b(h) * torch.sigmoid(s.mean(1, keepdim=True)),
    "broadcast": lambda m, h, s: m.b(h) + s if s.shape[1] == 1 else m.b(h) + s.sum(1, keepdim=True),
    "expand": lambda m, h, s: m.b(h) + (s.expand(-1, NOUT) if s.shape[1] == 1
                                        else s[:, :, None].expand(-1, -1, NOUT).sum(1)),
    "squeeze": lambda m, h, s: m.b(h) + (s.squeeze(1)[:, None] if s.shape[1] == 1 else s.prod(1, keepdim=True)),
    "linear": lambda m, h, s: m.b(h) + m.c(s),
    "concat": lambda m, h, s: m.d(torch.cat([s, h], 1)),
}


@st.composite
def slices(draw):
    """(width, slice, kind): one neuron, a stretch, the whole axis, or every step-th neuron."""
    width = draw(st.integers(5, 9))
    kind = draw(st.sampled_from(["one", "stretch", "full", "strided"]))
    if kind == "one":
        start = draw(st.integers(0, width - 1))
        return width, slice(start, start + 1), kind
    if kind == "stretch":
        start = draw(st.integers(0, width - 2))
        return width, slice(start, draw(st.integers(start + 2, width))), kind
    if kind == "full":
        return width, slice(None), kind
    step = draw(st.sampled_from([d for d in range(2, width // 2 + 1) if width % d == 0] or [None]))
    if step is None:  # a prime width: no strided slice the tracer accepts; a stretch instead
        return width, slice(1, width - 1), "stretch"
    return width, slice(draw(st.integers(0, step - 1)), None, step), kind


def _slice_model(width: int, sl: slice, use: str) -> nn.Module:
    n = len(range(*sl.indices(width)))

    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, width), nn.Linear(width, NOUT)
            self.c, self.d = nn.Linear(n, NOUT), nn.Linear(n + width, NOUT)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            return SLICE_USES[use](self, h, h[:, sl])

    return Sliced().double().eval()


def _neuron_permutation(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Which old neuron each row of ``after`` is (rows of a random weight are distinct)."""
    return [int((before - row).abs().sum(1).argmin()) for row in after]


def _check_slice(width: int, sl: slice, kind: str, use: str, seed: int) -> None:
    """The traced spec of a model reading a slice of a hidden layer is a symmetry (function kept,
    weights moved) and never moves a neuron across the slice's ends; or the tracer refuses naming
    the op (a strided slice read as a layer's input features)."""
    torch.manual_seed(seed)
    model, x = _slice_model(width, sl, use), torch.randn(6, 4, dtype=torch.float64)
    if kind == "strided" and use in ("linear", "concat"):
        with pytest.raises(ws.UnsupportedOpError, match="cannot trace node '(linear|cat)"):
            ws.WeightSpaceSpec.from_module(model, x, check=False)
        return
    spec = ws.WeightSpaceSpec.from_module(model, x, check=False)  # the spec itself, not its self-check
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    moved = ws.act(sd, spec, ws.random_element(spec, g))
    assert rel_err(outputs(model, (x,)), outputs(model, (x,), moved)) < 1e-10, (kind, use, sl)
    inside = set(range(*sl.indices(width)))
    groups = [grp for grp in spec.groups if grp.size > 1 and (grp.heads is None or grp.heads[1] > 1)]
    assert groups, f"no group left to test ({kind}, {use}, {sl}): {spec}"
    for grp in groups:
        perm = ws.permute(sd, spec, single_group_element(spec, grp.name, g))
        assert changed(sd, perm), f"group {grp.name} moves no weight"
        assert rel_err(outputs(model, (x,)), outputs(model, (x,), perm)) < 1e-10, (grp.name, kind, use, sl)
        old = _neuron_permutation(sd["a.weight"], perm["a.weight"])
        assert {old[i] for i in inside} == inside, f"group {grp.name} moves a neuron across the ends of {sl}"


SLICES = [("one", slice(3, 4)), ("one", slice(0, 1)), ("one", slice(7, 8)), ("stretch", slice(2, 5)),
          ("stretch", slice(0, 3)), ("full", slice(None)), ("strided", slice(0, None, 2)),
          ("strided", slice(1, None, 4))]


@pytest.mark.parametrize("use", sorted(SLICE_USES))
@pytest.mark.parametrize("kind,sl", SLICES, ids=lambda v: f"{v.start}:{v.stop}:{v.step}" if isinstance(v, slice) else v)
def test_slices_of_hidden_features(kind, sl, use):
    """Every slice shape with every use, on a hidden layer of 8 (issue 19: ``b(h) + h[:, 3:4]``)."""
    _check_slice(8, sl, kind, use, seed=0)


@SETTINGS
@given(case=slices(), use=st.sampled_from(sorted(SLICE_USES)), seed=st.integers(0, 2**16))
def test_random_slices_of_hidden_features(case, use, seed):
    width, sl, kind = case
    _check_slice(width, sl, kind, use, seed)
