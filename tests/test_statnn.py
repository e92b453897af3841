"""StatNN (Unterthiner et al., 2020): per-tensor statistics, their permutation invariance, the fitted
regressors, and a smoke run of examples/generalization_prediction.py on a tiny zoo."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from weightspace import WeightSpace, WeightSpaceSpec
from weightspace.errors import UsageError
from weightspace.symmetry import random_element
from weightspace.train import fit_statnn, kendall_tau, statnn_feature_names, statnn_features

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "generalization_prediction.py"


def mlp_space(b: int, seed: int = 0) -> WeightSpace:
    spec = WeightSpaceSpec.mlp([3, 5, 4, 2])
    g = torch.Generator().manual_seed(seed)
    return WeightSpace(spec, {p.name: torch.randn(b, *p.shape, generator=g) * (1 + i)
                              for i, p in enumerate(spec.params)})


def test_features_are_mean_var_and_quantiles_of_each_tensor():
    ws = mlp_space(6)
    f = statnn_features(ws)
    names = statnn_feature_names(ws.spec)
    assert f.shape == (6, 7 * len(ws.spec.weight_names)) == (6, len(names))
    assert names[:2] == ["0.weight:mean", "0.weight:var"] and names[-1] == "4.bias:q100"
    q = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    for k, name in enumerate(ws.spec.weight_names):
        x = ws[name].reshape(6, -1)
        block = f[:, 7 * k:7 * (k + 1)].float()
        torch.testing.assert_close(block[:, 0], x.mean(1))
        torch.testing.assert_close(block[:, 1], x.var(1, unbiased=False))
        torch.testing.assert_close(block[:, 2:], torch.quantile(x, q, dim=1).T)


def test_known_values_on_a_hand_made_tensor():
    spec = WeightSpaceSpec.mlp([2, 2], activation=None)
    ws = WeightSpace(spec, {"0.weight": torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), "0.bias": torch.tensor([[5.0, 5.0]])})
    f = statnn_features(ws)[0].tolist()
    assert f[:7] == [2.5, 1.25, 1.0, 1.75, 2.5, 3.25, 4.0]
    assert f[7:] == [5.0, 0.0, 5.0, 5.0, 5.0, 5.0, 5.0]


def test_features_are_invariant_under_neuron_permutations():
    ws = mlp_space(8)
    moved = random_element(ws.spec, torch.Generator().manual_seed(1), batch_size=8, kinds=("permutation",)).act(ws)
    assert not torch.equal(moved["0.weight"], ws["0.weight"])
    torch.testing.assert_close(statnn_features(moved), statnn_features(ws))


@pytest.mark.parametrize("method", ["gbt", "mlp"])
def test_fitted_statnn_learns_a_function_of_a_weight_statistic(method):
    ws = mlp_space(240, seed=2)
    y = torch.sigmoid(ws["2.weight"].reshape(240, -1).mean(1) * 4)          # depends on one tensor's mean
    opts = {"n_estimators": 100} if method == "gbt" else {}
    model = fit_statnn(ws[:160], y[:160], method=method, seed=0, **opts)
    pred = model.predict(ws[160:])
    assert pred.shape == (80,) and pred.dtype == torch.float32
    assert kendall_tau(pred, y[160:]) > 0.8
    assert torch.equal(fit_statnn(ws[:160], y[:160], method=method, seed=0, **opts).predict(ws[160:]), pred)


def test_bad_input_is_a_usage_error():
    ws = mlp_space(4)
    with pytest.raises(UsageError, match="method"):
        fit_statnn(ws, torch.rand(4), method="svm")
    with pytest.raises(UsageError, match="3 targets for 4 networks"):
        fit_statnn(ws, torch.rand(3))
    other = WeightSpace(WeightSpaceSpec.mlp([3, 6, 2]), {n: torch.zeros(2, *p.shape) for n, p in
                                                         ((p.name, p) for p in WeightSpaceSpec.mlp([3, 6, 2]).params)})
    with pytest.raises(UsageError, match="architecture"):
        fit_statnn(ws, torch.rand(4), n_estimators=5).predict(other)


def test_example_runs_on_a_tiny_zoo(tmp_path):
    spec = importlib.util.spec_from_file_location("generalization_prediction", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "out"
    result = example.main(["--zoo", str(tmp_path / "zoo"), "--num-models", "12", "--steps", "20", "--epochs", "1",
                           "--models", "flat-mlp", "--seeds", "0", "--out", str(out), "--no-progress"])
    assert {"StatNN-GBT", "StatNN-MLP", "flat-mlp"} <= set(result["methods"])
    assert (out / "results.md").is_file() and (out / "scatter.png").is_file()
    assert "Kendall" in (out / "results.md").read_text()
