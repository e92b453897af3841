"""Activation matching, STE, Sinkhorn and MergeMany on exact and trained cases."""
from __future__ import annotations

import copy

import pytest
import torch

import weightspace as ws
from align_helpers import digit_mlps, traced
from weightspace.align.sinkhorn import soft_permutations
from weightspace.merge import barrier_curve, evaluate


@pytest.mark.parametrize("name", ["mlp_relu", "resnet20", "densenet", "tiny_transformer", "vit"])
def test_activation_matching_recovers_a_permuted_copy(name):
    model, spec, inputs = traced(name)
    a = model.state_dict()
    b = ws.permute(a, spec, ws.random_permutation(spec, generator=torch.Generator().manual_seed(1)))
    mb = copy.deepcopy(model)
    mb.load_state_dict(b)
    g = torch.Generator().manual_seed(2)
    data = torch.randn((64,) + inputs[0].shape[1:], generator=g)
    perms = ws.activation_matching(spec, model, mb, data)
    aligned = ws.permute(b, spec, perms)
    assert all(torch.equal(aligned[k], a[k]) for k in a)


def test_activation_matching_accepts_state_dicts_with_a_template():
    model, spec, inputs = traced("mlp_tanh")   # no dead neurons: every match is determined by the data
    b = ws.permute(model.state_dict(), spec, ws.random_permutation(spec, generator=torch.Generator().manual_seed(0)))
    perms = ws.activation_matching(spec, model.state_dict(), b, torch.randn(32, 5), model=model)
    assert all(torch.equal(ws.permute(b, spec, perms)[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ws.SpecError, match="model="):
        ws.activation_matching(spec, model.state_dict(), b, torch.randn(32, 5))


def test_sinkhorn_recovers_a_permuted_copy_and_its_soft_elements_are_doubly_stochastic():
    model, spec, _ = traced("tiny_transformer")
    a = model.state_dict()
    b = ws.permute(a, spec, ws.random_permutation(spec, generator=torch.Generator().manual_seed(0)))
    perms, soft = ws.sinkhorn_matching(spec, a, b, steps=150, return_soft=True)
    aligned = ws.permute(b, spec, perms)
    assert all(torch.equal(aligned[k], a[k]) for k in a)
    for g, m in soft.items():
        assert torch.allclose(m.sum(0), torch.ones(m.shape[0]), atol=1e-4), g   # Sinkhorn ends on columns
        assert torch.allclose(m.sum(1), torch.ones(m.shape[0]), atol=1e-2), g


def test_soft_permutations_of_hard_logits_are_valid_group_elements():
    _, spec, _ = traced("hand_attention")
    hidden = ws.random_permutation(spec, generator=torch.Generator().manual_seed(0))
    logits = {}
    for g in spec.groups:
        p = hidden[g.name]
        if g.heads is None:
            logits[g.name] = 50 * torch.nn.functional.one_hot(p, g.size).float()
        else:
            block = g.heads[1]
            within = (p % block).view(-1, block)
            logits[g.name] = 50 * torch.nn.functional.one_hot(within, block).float()
    soft = soft_permutations(spec, logits, tau=1.0, iterations=30)
    for g in spec.groups:
        assert torch.equal(soft[g.name].argmax(1), hidden[g.name]), g.name


def test_ste_moves_towards_a_lower_midpoint_loss():
    (ma, mb), train, test = digit_mlps()
    spec = ws.WeightSpaceSpec.from_module(ma, train[0][:2])
    a, b = ma.state_dict(), mb.state_dict()
    info = {}
    perms = ws.ste_matching(spec, ma, a, b, train, steps=30, lr=1e-3, info=info)
    assert len(info["losses"]) == 30
    ws.check_permutations(spec, perms)
    ste = barrier_curve(ma, a, ws.permute(b, spec, perms), test, n=3).midpoint_loss_barrier
    naive = barrier_curve(ma, a, b, test, n=3).midpoint_loss_barrier
    assert ste < 0.5 * naive


def test_merge_many_puts_permuted_copies_into_one_basin():
    model, spec, inputs = traced("resnet20")
    a = model.state_dict()
    g = torch.Generator().manual_seed(0)
    copies = [a] + [ws.permute(a, spec, ws.random_permutation(spec, generator=g)) for _ in range(3)]
    result = ws.merge_many(spec, copies, seed=0)
    for aligned in result.aligned[1:]:
        assert all(torch.equal(aligned[k], result.aligned[0][k]) for k in a)
    y = model(*inputs)
    m = copy.deepcopy(model)
    m.load_state_dict(result.merged)
    assert torch.allclose(m(*inputs), y, atol=1e-5)


def test_merge_many_beats_plain_averaging_on_trained_mlps():
    (models, train, test) = digit_mlps(3)
    spec = ws.WeightSpaceSpec.from_module(models[0], train[0][:2])
    states = [m.state_dict() for m in models]
    merged = ws.merge_many(spec, states, seed=0).merged
    loss_many, _ = evaluate(models[0], merged, test)
    loss_avg, _ = evaluate(models[0], ws.weighted_average(states), test)
    assert loss_many < 0.5 * loss_avg
