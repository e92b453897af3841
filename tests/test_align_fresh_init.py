"""Weight matching from a fresh initialization (issue 21, item 3).

At initialization BatchNorm layers are all ones / zeros and biases are zero: those entries cannot
tell neurons apart, and a descent that trusted them first locked residual streams into arbitrary
orders (MobileNet v2 stopped in seed-dependent local optima). Here a MobileNet-v2-like network
(inverted residual blocks, depthwise convolutions, fresh BatchNorm, bias-free convolutions, a zero
classifier bias, torchvision's initialization) is aligned to a permuted copy of itself: recovery must
be exact for every seed, reaching the objective's upper bound ``|A| |B|``. The first assignments of
such a descent see rank-one costs (biases only), which the LAP solver takes by sorting: its exact
shortcuts are checked against scipy here too.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from torch import nn

import weightspace as ws
from weightspace.align import weight_matching
from weightspace.align._tree import lap

torch.set_num_threads(1)


def _conv_bn(i: int, o: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(i, o, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(o)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear projection (1x1), a residual when shapes allow."""

    def __init__(self, i: int, o: int, stride: int, expand: int):
        super().__init__()
        h = i * expand
        self.residual = stride == 1 and i == o
        expansion = [_conv_bn(i, h)] if expand != 1 else []
        self.body = nn.Sequential(*expansion, _conv_bn(h, h, 3, stride, groups=h), _conv_bn(h, o, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class TinyMobileNetV2(nn.Module):
    # (expansion, channels, blocks, stride), as in MobileNet v2's table, scaled down
    CONFIG = ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2))

    def __init__(self, width: int = 8, last: int = 32, classes: int = 10):
        super().__init__()
        layers, c = [_conv_bn(3, width, 3, 2)], width
        for expand, o, n, s in self.CONFIG:
            for r in range(n):
                layers.append(InvertedResidual(c, o, s if r == 0 else 1, expand))
                c = o
        layers.append(_conv_bn(c, last))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, classes)
        for m in self.modules():                       # torchvision's MobileNetV2 initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


@pytest.mark.parametrize("seed", range(5))
def test_fresh_mobilenet_v2_like_is_recovered_exactly(seed):
    torch.manual_seed(seed)
    net = TinyMobileNetV2().eval()
    x = torch.randn(4, 3, 32, 32)
    spec = ws.WeightSpaceSpec.from_module(net, x)
    a = {k: v.clone() for k, v in net.state_dict().items()}
    # fresh: norm layers carry no information, biases are zero
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in a.items() if k.endswith((".1.weight", "running_var")))
    assert not any(a[k].any() for k in a if k.endswith((".1.bias", "running_mean", "classifier.bias")))
    hidden = ws.random_permutation(spec, generator=torch.Generator().manual_seed(100 + seed))
    b = ws.permute(a, spec, hidden)
    assert any(not torch.equal(a[k], b[k]) for k in a), "the hidden permutation must move weights"
    with torch.no_grad():                            # the permuted copy computes the same function
        want = net(x)
        net.load_state_dict(b)
        assert torch.allclose(net(x), want, atol=1e-5)
    info: dict = {}
    perms = weight_matching(spec, a, b, seed=seed, info=info)
    aligned = ws.permute(b, spec, perms)
    assert all(torch.equal(aligned[k], a[k]) for k in a), f"seed {seed}: objective {info['objective']}"
    start, end = info["objective"]
    assert end > start and end == pytest.approx(info["bound"], rel=1e-9)


# ---------------------------------------------------------------- the exact shortcuts of the LAP solver
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(32, 90), st.sampled_from(["random", "rank_one", "near_perm", "zeros"]))
def test_lap_shortcuts_match_scipy(seed, n, kind):
    """``lap`` (strict row maxima / rank-one shortcuts, else scipy) reaches scipy's optimal value on
    every kind of cost, and the same assignment where the optimum is unique."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        m = rng.standard_normal((n, n))
    elif kind == "rank_one":                       # a bias-only cost: u_i * v_j
        m = np.outer(rng.standard_normal(n), rng.standard_normal(n))
    elif kind == "near_perm":                      # B close to a permuted A
        m = 0.01 * rng.standard_normal((n, n))
        m[np.arange(n), rng.permutation(n)] += 1.0
    else:
        m = np.zeros((n, n))
    cols = lap(m)
    assert sorted(cols.tolist()) == list(range(n))
    rows, ref = linear_sum_assignment(m, maximize=True)
    best = m[rows, ref].sum()
    assert m[np.arange(n), cols].sum() == pytest.approx(best, rel=1e-12, abs=1e-12)
    if kind in ("rank_one", "near_perm"):           # unique optimum (distinct u, v / a clear permutation)
        assert np.array_equal(cols, ref)
