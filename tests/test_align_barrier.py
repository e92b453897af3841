"""On trained networks: alignment lowers the loss barrier; BatchNorm reset and REPAIR lower it further."""
from __future__ import annotations


import weightspace as ws
from align_helpers import digit_cnns, digit_mlps
from weightspace.align import endpoint_statistics, repair, reset_bn_statistics
from weightspace.merge import barrier_curve


def _mlp_setup():
    models, train, test = digit_mlps()
    spec = ws.WeightSpaceSpec.from_module(models[0], train[0][:2])
    return models, spec, train, test


def test_weight_matching_lowers_the_midpoint_barrier_on_digit_mlps():
    (ma, mb), spec, train, test = _mlp_setup()
    a, b = ma.state_dict(), mb.state_dict()
    naive = barrier_curve(ma, a, b, test, n=3)
    aligned = barrier_curve(ma, a, ws.permute(b, spec, ws.weight_matching(spec, a, b)), test, n=3)
    assert naive.midpoint_loss_barrier > 0.2
    assert aligned.midpoint_loss_barrier < 0.35 * naive.midpoint_loss_barrier
    assert aligned.midpoint_accuracy_barrier < naive.midpoint_accuracy_barrier


def test_other_matchings_lower_the_barrier_too():
    (ma, mb), spec, train, test = _mlp_setup()
    a, b = ma.state_dict(), mb.state_dict()
    naive = barrier_curve(ma, a, b, test, n=3).midpoint_loss_barrier
    found = {
        "activation": ws.activation_matching(spec, ma, mb, train[0]),
        "ste": ws.ste_matching(spec, ma, a, b, train, steps=20, seed=0),
        "sinkhorn": ws.sinkhorn_matching(spec, a, b, steps=60),
    }
    for name, perms in found.items():
        barrier = barrier_curve(ma, a, ws.permute(b, spec, perms), test, n=3).midpoint_loss_barrier
        assert barrier < 0.5 * naive, name


def test_repair_lowers_the_barrier_after_alignment_on_an_mlp():
    (ma, mb), spec, train, test = _mlp_setup()
    a, b = ma.state_dict(), mb.state_dict()
    bp = ws.permute(b, spec, ws.weight_matching(spec, a, b))
    stats = endpoint_statistics(ma, [a, bp], train[0], spec=spec)
    plain = barrier_curve(ma, a, bp, test, n=3).midpoint_loss_barrier
    repaired = barrier_curve(ma, a, bp, test, n=3, correct=lambda s, t: repair(
        ma, s, None, train[0], weights=(1 - t, t), spec=spec, statistics=stats)).midpoint_loss_barrier
    assert repaired < plain


def test_bn_reset_and_repair_lower_the_barrier_on_a_cnn_with_batchnorm():
    (ma, mb), train, test = digit_cnns()
    spec = ws.WeightSpaceSpec.from_module(ma, train[0][:2])
    a, b = ma.state_dict(), mb.state_dict()
    bp = ws.permute(b, spec, ws.weight_matching(spec, a, b))
    naive = barrier_curve(ma, a, b, test, n=3).midpoint_loss_barrier
    aligned = barrier_curve(ma, a, bp, test, n=3).midpoint_loss_barrier
    reset = barrier_curve(ma, a, bp, test, n=3,
                          correct=lambda s, t: reset_bn_statistics(ma, s, train[0])).midpoint_loss_barrier
    stats = endpoint_statistics(ma, [a, bp], train[0], spec=spec)
    repaired = barrier_curve(ma, a, bp, test, n=3, correct=lambda s, t: repair(
        ma, s, None, train[0], weights=(1 - t, t), spec=spec, statistics=stats)).midpoint_loss_barrier
    assert aligned < naive
    assert reset < aligned
    assert repaired < aligned
