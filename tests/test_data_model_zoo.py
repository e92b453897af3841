"""Model zoos: per-model hyperparameters, records that match the weights, resumable shards."""
from __future__ import annotations

import pytest
import torch

from weightspace.cli import main as cli
from weightspace.data import load_zoo, make_model_zoo
from weightspace.data.model_zoo import build_model, load_training_data, sample_config
from weightspace.errors import UsageError

KW = dict(num_models=5, steps=(15, 30), shard_size=2, progress=False, seed=1, threads=1)


def test_resumed_model_zoo_equals_uninterrupted(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    m = make_model_zoo(full, **KW)
    assert m["complete"] and len(m["test_accuracy"]) == 5
    assert not make_model_zoo(part, max_shards=1, **KW)["complete"]
    make_model_zoo(part, **KW)
    for p in sorted((full / "shards").iterdir()):
        assert p.read_bytes() == (part / "shards" / p.name).read_bytes()


def test_records_match_the_weights_and_configs(tmp_path):
    out = tmp_path / "zoo"
    make_model_zoo(out, arch="mlp", width=16, **{**KW, "steps": (60, 120)})
    zoo = load_zoo(out)
    data = load_training_data("digits", seed=1)
    for i in range(5):
        cfg = sample_config(1, i, "mlp", (16,), (60, 120))
        assert zoo.records["steps"][i] == cfg.steps and abs(zoo.records["lr"][i].item() - cfg.lr) < 1e-9
        model = build_model(cfg, (1, 8, 8)).eval()
        model.load_state_dict(zoo.weights.state_dict(i))
        with torch.no_grad():
            acc = (model(data["x_test"]).argmax(-1) == data["y_test"]).float().mean()
        assert abs(acc.item() - zoo.records["test_accuracy"][i].item()) < 1e-6
    assert zoo.records["test_accuracy"].max() > 0.5                    # some models learned (chance: 0.1)
    assert zoo.records["test_accuracy"].min() < zoo.records["test_accuracy"].max() - 0.1   # and they differ
    ds = zoo.dataset()                                                    # targets: test accuracy
    assert torch.equal(ds[0][1], zoo.records["test_accuracy"][0])


def test_cli_make_zoo(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["make-zoo", "--out", str(out), "--num-models", "3", "--steps", "10", "--shard-size", "3",
                "--no-progress"]) == 0
    assert "3 models" in capsys.readouterr().out
    assert load_zoo(out).weights.batch_size == 3


@pytest.mark.parametrize("kwargs,name", [
    (dict(num_models=0), "num_models"), (dict(num_models=-2), "num_models"), (dict(width=0), "width"),
    (dict(steps=(0, 5)), "steps"), (dict(steps=()), "steps"), (dict(batch_size=0), "batch_size"),
    (dict(shard_size=0), "shard_size"), (dict(seed=-1), "seed"), (dict(arch="rnn"), "arch"),
    (dict(source="cifar10"), "source"), (dict(max_shards=0), "max_shards"),
])
def test_bad_arguments_are_refused_before_any_write(tmp_path, kwargs, name):
    with pytest.raises(UsageError) as e:
        make_model_zoo(tmp_path / "zoo", **{**KW, **kwargs})
    assert e.value.where == name
    assert not (tmp_path / "zoo").exists()


def test_a_zoo_mixing_activations_claims_only_the_symmetries_all_its_models_share(tmp_path):
    import weightspace as ws
    from weightspace.models import mlp
    from weightspace.spec.meet import common_symmetries

    x = torch.randn(3, 4)
    relu = ws.WeightSpaceSpec.from_module(mlp([4, 6, 5, 2], "relu"), x)
    tanh = ws.WeightSpaceSpec.from_module(mlp([4, 6, 5, 2], "tanh"), x)
    assert relu.scalings and tanh.scalings                       # each alone has diagonal symmetries
    both = common_symmetries([relu, tanh])
    assert not both.scalings and [g.size for g in both.groups] == [g.size for g in relu.groups]
    assert all(g.activation is None for g in both.groups)
    assert common_symmetries([relu, relu]) == relu
    out = tmp_path / "mixed"
    make_model_zoo(out, arch="mlp", width=8, **{**KW, "num_models": 8, "shard_size": 4})
    zoo = load_zoo(out)
    assert len(set(zoo.records["activation"].tolist())) == 2     # this seed draws ReLU and tanh models
    assert not zoo.weights.spec.scalings
