"""Ito et al.'s weight-matching analysis: distances, singular values and singular-vector alignment,
and the merging comparison of three or more models."""
from __future__ import annotations

import pytest
import torch

import weightspace as ws
from weightspace.align.analysis import matching_analysis, merge_comparison
from weightspace.models import SoftTreeEnsemble, mlp


def random_mlp(widths, seed):
    spec = ws.WeightSpaceSpec.mlp(widths)
    g = torch.Generator().manual_seed(seed)
    return spec, {p.name: torch.randn(p.shape, generator=g, dtype=torch.float64) for p in spec.params}


@pytest.mark.parametrize("widths", [[6, 9, 7, 3], [4, 12, 2]])
def test_a_permuted_copy_matches_at_distance_zero_with_aligned_singular_vectors(widths, tmp_path):
    spec, a = random_mlp(widths, 0)
    b = ws.act(a, spec, ws.random_element(spec, torch.Generator().manual_seed(1), kinds=("permutation",)))
    result = matching_analysis(spec, a, b, top_k=3)
    assert [r.name for r in result.layers] == [n for n in spec.weight_names if n.endswith("weight")]
    for r in result.layers:
        assert r.distance_before > 0.5 and r.distance_after < 1e-10
        assert torch.allclose(r.singular_a, r.singular_b, atol=1e-10)        # permutations keep singular values
        for after in (r.left_after, r.right_after):
            assert torch.allclose(after, torch.ones_like(after), atol=1e-8)
    hidden = [r for r in result.layers if r.name != result.layers[-1].name]  # the last layer's rows are fixed
    assert any(float(r.left_before.min()) < 0.9 for r in hidden)
    assert "L2 before" in result.table()
    path = tmp_path / "analysis.png"
    result.plot(str(path))
    assert path.stat().st_size > 10_000


def test_the_analysis_reads_any_element_tree_ensembles_included():
    m = SoftTreeEnsemble(4, 2, trees=10, depth=2, kind="oblivious", dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))
    spec = ws.WeightSpaceSpec.from_module(m, torch.randn(3, 4, dtype=torch.float64))
    a = {k: v.detach() + (k == "bias") * torch.randn(v.shape, dtype=v.dtype) for k, v in m.state_dict().items()}
    b = ws.act(a, spec, ws.random_element(spec, torch.Generator().manual_seed(2)))
    result = matching_analysis(spec, a, b)
    assert {r.name for r in result.layers} == {"weight", "bias", "leaves"}
    assert all(r.distance_after < 1e-10 < r.distance_before for r in result.layers)
    two = random_mlp([5, 8, 3], 3)[1]
    unrelated = matching_analysis(ws.WeightSpaceSpec.mlp([5, 8, 3]), random_mlp([5, 8, 3], 4)[1], two)
    for r in unrelated.layers:                                                # matching never increases the distance
        assert r.distance_after <= r.distance_before + 1e-12 and r.distance_after > 0.1


def test_merge_comparison_of_three_models():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long()
    model = mlp([4, 16, 2])
    spec = ws.WeightSpaceSpec.from_module(model, x[:2])
    states = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = mlp([4, 16, 2])
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(60):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    result = merge_comparison(spec, model, states, (x, y), (x, y), ste_steps=5)
    assert set(result.rows) == {"average (no alignment)", "weight matching (MergeMany)",
                                "weight matching (to model 0)", "STE (to model 0)"}
    for loss, acc in [*result.rows.values(), *result.models]:
        assert loss > 0 and 0 <= acc <= 1
    assert min(acc for _, acc in result.models) > 0.8                       # the endpoints learned the task
    assert "STE (to model 0)" in result.table()
    with pytest.raises(ValueError, match="three or more"):
        merge_comparison(spec, model, states[:2], (x, y), (x, y))
