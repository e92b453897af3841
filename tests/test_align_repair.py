"""BatchNorm reset and REPAIR do what they promise: statistics that match the data / the targets."""
from __future__ import annotations

import copy

import torch

import weightspace as ws
from align_helpers import digit_mlps, traced
from weightspace.align import endpoint_statistics, repair, repair_points, reset_bn_statistics
from weightspace.align.repair import neuron_statistics


def test_bn_reset_gives_the_statistics_of_the_data():
    model, spec, _ = traced("vgg_bn")
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    state = reset_bn_statistics(model, model.state_dict(), x, batch_size=None)  # one batch: exact
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    with torch.no_grad():
        h = m.features[0](x)                        # the first BatchNorm's input
    mean = h.mean((0, 2, 3))
    var = h.transpose(0, 1).reshape(h.shape[1], -1).var(1)   # unbiased, as BatchNorm keeps it
    assert torch.allclose(state["features.1.running_mean"], mean, atol=1e-5)
    assert torch.allclose(state["features.1.running_var"], var, rtol=1e-4)
    assert torch.equal(state["features.0.weight"], model.state_dict()["features.0.weight"])


def test_bn_reset_without_batchnorm_changes_nothing():
    model, spec, _ = traced("mlp_relu")
    state = reset_bn_statistics(model, model.state_dict(), torch.randn(8, 5))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_repair_gives_every_corrected_neuron_the_target_statistics():
    (ma, mb), (xtr, _), _ = digit_mlps()
    spec = ws.WeightSpaceSpec.from_module(ma, xtr[:2])
    a, b = ma.state_dict(), mb.state_dict()
    bp = ws.permute(b, spec, ws.weight_matching(spec, a, b))
    merged = ws.interpolate(a, bp, 0.3)
    points = repair_points(spec)
    assert len(points) == 2 and all(p.kind == "fold" for p in points)   # the two hidden Linears
    info = {}
    fixed = repair(ma, merged, [a, bp], xtr, weights=(0.7, 0.3), spec=spec, info=info)
    sites = [p.site for p in points]
    ends = [neuron_statistics(ma, s, xtr, sites, spec) for s in (a, bp)]
    got = neuron_statistics(ma, fixed, xtr, sites, spec)
    for s in sites:
        target_mean = 0.7 * ends[0][s][0] + 0.3 * ends[1][s][0]
        target_std = 0.7 * ends[0][s][1] + 0.3 * ends[1][s][1]
        assert torch.allclose(got[s][0], target_mean, atol=1e-3)
        assert torch.allclose(got[s][1], target_std, rtol=1e-3, atol=1e-4)
    assert info["residual"] < 1e-3
    # the architecture is unchanged: only the corrected layers' weights and biases moved
    assert set(fixed) == set(merged)
    assert torch.equal(fixed["4.weight"], merged["4.weight"])


def test_repair_on_batchnorm_points_sets_the_targets():
    model, spec, _ = traced("resnet20")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, 8, 8, generator=g)
    a = model.state_dict()
    b = {k: v + 0.2 * torch.randn(v.shape, generator=g) if v.is_floating_point() and "running" not in k else v
         for k, v in a.items()}
    merged = ws.interpolate(a, b, 0.5)
    points = repair_points(spec)
    assert points and all(p.kind == "bn" for p in points)      # convs without bias: BatchNorm does it
    stats = endpoint_statistics(model, [a, b], x, spec=spec)
    fixed = repair(model, merged, None, x, spec=spec, statistics=stats, bn_batch_size=None)
    got = neuron_statistics(model, fixed, x, [p.site for p in points], spec)
    before = neuron_statistics(model, merged, x, [p.site for p in points], spec)
    err_after = err_before = 0.0
    for p in points:
        target = 0.5 * (stats[0][p.site][1] + stats[1][p.site][1])
        err_after += float((got[p.site][1] - target).abs().mean())
        err_before += float((before[p.site][1] - target).abs().mean())
    assert err_after < 0.05 * err_before
