"""Each merge method on a tiny hand-computed case; mismatched networks name the first differing entry."""
from __future__ import annotations

import pytest
import torch

import weightspace as ws
from weightspace.merge import dare, interpolate, task_arithmetic, ties_merging, weighted_average


def sd(w, b=None, steps=3):
    out = {"w": torch.tensor(w, dtype=torch.float32), "steps": torch.tensor(steps)}
    if b is not None:
        out["b"] = torch.tensor(b, dtype=torch.float32)
    return out


def test_interpolate():
    out = interpolate(sd([0.0, 2.0], steps=3), sd([4.0, 6.0], steps=9), 0.25)
    assert torch.equal(out["w"], torch.tensor([1.0, 3.0]))
    assert out["steps"].item() == 3              # integer buffers come from a
    assert torch.equal(interpolate(sd([0.0]), sd([4.0]), 0.0)["w"], torch.tensor([0.0]))
    assert torch.equal(interpolate(sd([0.0]), sd([4.0]), 1.0)["w"], torch.tensor([4.0]))


def test_weighted_average():
    out = weighted_average([sd([0.0, 2.0]), sd([4.0, 6.0])], weights=[1, 3])
    assert torch.allclose(out["w"], torch.tensor([3.0, 5.0]))
    out = weighted_average([sd([0.0]), sd([3.0]), sd([9.0])])
    assert torch.allclose(out["w"], torch.tensor([4.0]))


def test_task_arithmetic():
    base, m1, m2 = sd([1.0, 1.0]), sd([2.0, 1.0]), sd([1.0, 3.0])
    # base + 0.5 * ((1, 0) + (0, 2)) = (1.5, 2)
    assert torch.allclose(task_arithmetic(base, [m1, m2], scale=0.5)["w"], torch.tensor([1.5, 2.0]))
    # a negative weight subtracts a task: base + (1, 0) - (0, 2) = (2, -1)
    assert torch.allclose(task_arithmetic(base, [m1, m2], weights=[1, -1])["w"], torch.tensor([2.0, -1.0]))


def test_ties():
    base = sd([0.0, 0.0, 0.0, 0.0])
    t1 = sd([1.0, -2.0, 3.0, 0.1])
    t2 = sd([-0.5, -1.0, 2.0, 4.0])
    # trim to the top half by magnitude: t1 -> (0, -2, 3, 0), t2 -> (0, 0, 2, 4)
    # elected signs of the sums (0, -2, 5, 4): (0, -, +, +)
    # disjoint means: (none -> 0, -2, (3 + 2) / 2, 4)
    out = ties_merging(base, [t1, t2], density=0.5, scale=1.0)
    assert torch.allclose(out["w"], torch.tensor([0.0, -2.0, 2.5, 4.0]))
    # without trimming the first entry has sign + (1 - 0.5): mean of the agreeing 1.0
    out = ties_merging(base, [t1, t2], density=1.0, scale=2.0)
    assert torch.allclose(out["w"], 2 * torch.tensor([1.0, -1.5, 2.5, 2.05]))


def test_dare():
    base, m1, m2 = sd([1.0, 1.0, 1.0, 1.0]), sd([3.0, 1.0, 5.0, 0.0]), sd([1.0, 2.0, 1.0, 1.0])
    # drop_rate 0 is task arithmetic
    assert torch.allclose(dare(base, [m1, m2], drop_rate=0.0)["w"], task_arithmetic(base, [m1, m2])["w"])
    # the masks: one generator seeded with `seed`, one draw per (tensor, model) in order, keep where >= p
    g = torch.Generator().manual_seed(7)
    keep1 = torch.rand(4, generator=g) >= 0.5
    keep2 = torch.rand(4, generator=g) >= 0.5
    tv1, tv2 = torch.tensor([2.0, 0.0, 4.0, -1.0]), torch.tensor([0.0, 1.0, 0.0, 0.0])
    expected = 1 + (tv1 * keep1 + tv2 * keep2) / 0.5
    assert torch.allclose(dare(base, [m1, m2], drop_rate=0.5, seed=7)["w"], expected)
    # DARE-TIES without dropping is TIES without trimming
    assert torch.allclose(dare(base, [m1, m2], drop_rate=0.0, combine="ties")["w"],
                          ties_merging(base, [m1, m2], density=1.0)["w"])


def test_dare_keeps_the_task_vector_in_expectation():
    base = {"w": torch.zeros(20000)}
    m = {"w": torch.full((20000,), 2.0)}
    out = dare(base, [m], drop_rate=0.9, seed=1)["w"]
    assert set(out.unique().tolist()) <= {0.0, 20.0}
    assert abs(out.mean().item() - 2.0) < 0.15


def test_weightspace_inputs_come_back_as_weightspaces():
    spec = ws.WeightSpaceSpec.mlp([2, 3, 1])
    g = torch.Generator().manual_seed(0)
    nets = [{p.name: torch.randn(p.shape, generator=g) for p in spec.params} for _ in range(2)]
    batch = ws.WeightSpace.from_state_dicts(nets, spec)
    out = weighted_average(batch)
    assert isinstance(out, ws.WeightSpace) and out.batch_size == 1
    assert torch.allclose(out["0.weight"][0], (nets[0]["0.weight"] + nets[1]["0.weight"]) / 2)
    mid = interpolate(batch[0], batch[1], 0.5)
    assert isinstance(mid, ws.WeightSpace)
    assert torch.allclose(mid.flatten(), out.flatten(), atol=1e-6)


@pytest.mark.parametrize("method", [
    lambda a, b: interpolate(a, b, 0.5),
    lambda a, b: weighted_average([a, b]),
    lambda a, b: task_arithmetic(a, [b]),
    lambda a, b: ties_merging(a, [b]),
    lambda a, b: dare(a, [b]),
])
def test_mismatched_networks_name_the_first_differing_entry(method):
    a = {"fc1.weight": torch.zeros(4, 3), "fc1.bias": torch.zeros(4), "fc2.weight": torch.zeros(2, 4)}
    b = {"fc1.weight": torch.zeros(4, 3), "fc1.bias": torch.zeros(4), "fc2.weight": torch.zeros(2, 5)}
    with pytest.raises(ws.SpecError, match="fc2.weight"):
        method(a, b)
    c = {"fc1.weight": torch.zeros(4, 3), "fc2.weight": torch.zeros(2, 4)}
    with pytest.raises(ws.SpecError, match="fc1.bias"):
        method(a, c)


def test_mismatched_specs_name_the_first_differing_parameter():
    s1, s2 = ws.WeightSpaceSpec.mlp([2, 3, 1]), ws.WeightSpaceSpec.mlp([2, 4, 1])
    w1 = ws.WeightSpace.from_state_dicts([{p.name: torch.zeros(p.shape) for p in s1.params}], s1)
    w2 = ws.WeightSpace.from_state_dicts([{p.name: torch.zeros(p.shape) for p in s2.params}], s2)
    with pytest.raises(ws.SpecError, match="0.weight"):
        interpolate(w1, w2, 0.5)
    with pytest.raises(ws.SpecError, match="0.weight"):
        ws.weight_matching(s1, w1, w2)
