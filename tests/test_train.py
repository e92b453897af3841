"""The trainer: resume equals an uninterrupted run, every registered metanetwork trains, tasks and
their metrics, and bad input ends in errors naming the file or option."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from weightspace.cli import main as cli
from weightspace.data import generate_inr_zoo, load_images, make_model_zoo
from weightspace.errors import UsageError
from weightspace.io import CheckpointError
from weightspace.train import (TrainConfig, evaluate, kendall_tau, lr_at, model_names, r2_score, train)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    x, y = load_images("digits")
    out = tmp_path_factory.mktemp("zoo") / "inr"
    splits = {"train": list(range(48)), "val": list(range(48, 56)), "test": list(range(56, 64))}
    generate_inr_zoo(out, x[:64], y[:64], splits=splits, steps=20, shard_size=32, progress=False, seed=0,
                     source={"name": "digits"})
    return out


@pytest.fixture(scope="module")
def other_zoo(tmp_path_factory):
    x, y = load_images("digits")
    out = tmp_path_factory.mktemp("zoo") / "inr-wide"
    splits = {"train": list(range(16)), "val": list(range(16, 20)), "test": list(range(20, 24))}
    generate_inr_zoo(out, x[:24], y[:24], splits=splits, steps=5, shard_size=32, progress=False, seed=0,
                     hidden=(8, 8), source={"name": "digits"})
    return out


def cfg(zoo, **kw):
    return TrainConfig(**{"task": "digits-inr", "zoo": str(zoo), "model": "flat-mlp", "epochs": 3,
                          "batch_size": 16, "lr": 3e-3, **kw})


class Stop(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(zoo, tmp_path):
    config = cfg(zoo, augment=("permutation", "noise=0.01", "mixup=0.4"))   # every random stream in use
    full = train(config, tmp_path / "full", progress=False)

    def kill(epoch, record):
        if epoch == 1:
            raise Stop
    with pytest.raises(Stop):
        train(config, tmp_path / "part", progress=False, on_epoch_end=kill)
    with safe_open(str(tmp_path / "part" / "checkpoint.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["state"])["epoch"] == 2          # stopped after its second epoch
    resumed = train(config, tmp_path / "part", resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full["test"] == resumed["test"]
    # the weights did change during training (the comparison above is not between two untouched inits)
    init = train(cfg(zoo, epochs=1, lr=1e-9), tmp_path / "tiny", progress=False)
    assert init["test"] != full["test"] or init["val"] != full["val"]


def test_outputs_of_a_run(zoo, tmp_path):
    m = train(cfg(zoo, epochs=4), tmp_path / "run", progress=False)
    for f in ("config.json", "spec.json", "checkpoint.safetensors", "best.safetensors", "metrics.json", "curve.png"):
        assert (tmp_path / "run" / f).stat().st_size > 0, f
    assert (tmp_path / "run" / "curve.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == m["test"]
    assert evaluate(tmp_path / "run") == m["test"]
    assert 0 <= m["test"]["accuracy"] <= 1 and m["epochs_run"] == 4


def test_training_lowers_the_loss(zoo, tmp_path):
    losses = []
    train(cfg(zoo, epochs=6, augment=()), tmp_path / "run", progress=False,
          on_epoch_end=lambda e, r: losses.append(r["train_loss"]))
    assert losses[-1] < 0.8 * losses[0]


def test_early_stopping(zoo, tmp_path):
    m = train(cfg(zoo, epochs=30, patience=2, lr=1e-7), tmp_path / "run", progress=False)
    assert m["early_stopped"] and m["epochs_run"] < 30


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_trains(zoo, tmp_path, name):
    small = {"flat-mlp": {"hidden": [32]}, "unf": {"channels": [4]}, "nfn-np": {"channels": [4]},
             "nfn-hnp": {"channels": [4]}}.get(name, {"hidden": 8, "layers": 1})
    losses = []
    m = train(cfg(zoo, model=name, model_options=small, epochs=2), tmp_path / name, progress=False,
              on_epoch_end=lambda e, r: losses.append(r["train_loss"]))
    assert all(math.isfinite(v) for v in losses) and math.isfinite(m["test"]["loss"])
    assert m["parameters"] > 0


def test_generalization_task_on_a_model_zoo(tmp_path):
    zoo = tmp_path / "cnn"
    make_model_zoo(zoo, num_models=12, steps=(5, 40), shard_size=6, progress=False, seed=0, threads=1)
    m = train(TrainConfig(task="generalization", zoo=str(zoo), model="flat-mlp", epochs=2, batch_size=4,
                          model_options={"hidden": [16]}), tmp_path / "run", progress=False)
    assert set(m["test"]) == {"kendall_tau", "r2", "mse"} and m["primary"] == "kendall_tau"


def test_schedule_and_metrics_against_known_answers():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1) and lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5) and lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
    x = torch.tensor([0.1, 0.4, 0.2, 0.9])
    assert kendall_tau(x, x) == pytest.approx(1.0) and kendall_tau(-x, x) == pytest.approx(-1.0)
    assert kendall_tau(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0])) == pytest.approx(1 / 3)
    assert r2_score(x, x) == pytest.approx(1.0) and r2_score(torch.full_like(x, float(x.mean())), x) == pytest.approx(0)


# ------------------------------------------------------------------------------------- bad input


def test_bad_configs_are_refused_before_any_work():
    for kw, opt in [({"lr": float("nan")}, "--lr"), ({"epochs": 0}, "--epochs"), ({"batch_size": -1}, "--batch-size"),
                    ({"augment": ("blur",)}, "--augment"), ({"augment": ("noise=x",)}, "--augment"),
                    ({"clip": float("inf")}, "--clip"), ({"train_size": 0}, "--train-size")]:
        with pytest.raises(UsageError, match=opt):
            TrainConfig(task="digits-inr", zoo="z", **kw)


def test_run_folder_protection_and_corrupt_checkpoint(zoo, tmp_path):
    out = tmp_path / "run"
    train(cfg(zoo, epochs=1), out, progress=False)
    with pytest.raises(UsageError, match="--resume"):
        train(cfg(zoo, epochs=1), out, progress=False)
    with pytest.raises(UsageError, match="lr"):
        train(cfg(zoo, epochs=1, lr=1e-2), out, resume=True, progress=False)
    (out / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(CheckpointError, match="checkpoint.safetensors"):
        train(cfg(zoo, epochs=1), out, resume=True, progress=False)


def test_targets_file_and_architecture_mismatch(zoo, other_zoo, tmp_path):
    bad = tmp_path / "targets.safetensors"
    save_file({"targets": torch.zeros(5, dtype=torch.long)}, str(bad))
    with pytest.raises(UsageError, match="targets.safetensors.*|5 targets"):
        train(cfg(zoo, targets=str(bad)), tmp_path / "r1", progress=False)
    train(cfg(zoo, epochs=1), tmp_path / "r2", progress=False)
    with pytest.raises(UsageError, match="manifest.json"):
        evaluate(tmp_path / "r2", zoo=other_zoo)


def test_cli_train_evaluate_and_one_line_errors(zoo, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "--task", "digits-inr", "--zoo", str(zoo), "--model", "flat-mlp", "--epochs", "1",
                "--batch-size", "16", "--out", str(out), "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert cli(["evaluate", str(out), "--json"]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)
    bad = [["train", "--task", "digits-inr", "--zoo", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
           ["train", "--task", "nope", "--zoo", str(zoo), "--out", str(tmp_path / "x")],
           ["train", "--task", "digits-inr", "--zoo", str(zoo), "--model", "nope", "--out", str(tmp_path / "x")],
           ["train", "--task", "digits-inr", "--zoo", str(zoo), "--model-options", "[1]", "--out", str(tmp_path / "x")],
           ["train", "--task", "digits-inr", "--zoo", str(zoo), "--model-options", '{"bogus": 1}',
            "--model", "flat-mlp", "--out", str(tmp_path / "x")],
           ["train", "--task", "digits-inr", "--zoo", str(zoo), "--lr", "nan", "--out", str(tmp_path / "x")],
           ["evaluate", str(tmp_path / "none")]]
    for argv in bad:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"weightspace {argv[0]}: error: "), (argv, err)
        assert not (tmp_path / "x").exists()
    err_none = cli(["train", "--task", "digits-inr", "--zoo", str(tmp_path / "none"), "--out", str(tmp_path / "y")])
    assert err_none == 2 and "weightspace fit-inrs --source digits" in capsys.readouterr().err


def test_probe_features_need_a_graph_model_and_an_evaluator(zoo, tmp_path):
    from weightspace.data import load_zoo
    from weightspace.train import build_model
    from weightspace.train.data import zoo_evaluator

    z = load_zoo(zoo)
    evaluator = zoo_evaluator(z.manifest)
    module, probes = evaluator(16)
    assert probes.shape == (16, 2) and probes.abs().max() <= 1          # points of the pixel grid
    with pytest.raises(UsageError, match="does not read probe"):
        build_model("scalegmn", z.weights.spec, 10, probe=8, evaluator=evaluator)
    with pytest.raises(UsageError, match="only INR zoos"):
        build_model("gmn", z.weights.spec, 10, probe=8, evaluator=None)
    m = train(cfg(zoo, model="gmn", model_options={"hidden": 8, "layers": 1, "probe": 16}, epochs=1),
              tmp_path / "probe", progress=False)
    assert math.isfinite(m["test"]["loss"])
