"""Scaling out on torch.distributed: a 2-process gloo training run (killed with SIGKILL, resumed) ends
with the 1-process run's weights; a zoo written by 2 torchrun ranks or by a job array of --shard
parts equals the 1-rank zoo byte for byte; zoo-check names missing and damaged shards.

Three torchrun launches in all (a few seconds each): everything else runs in this process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

from weightspace.cli import main as cli
from weightspace.data import generate_inr_zoo, load_images
from weightspace.data.shards import ShardError, ShardPart, ZooIncomplete, write_shard, writing_part
from weightspace.data.zoo import ZooRun
from weightspace.errors import UsageError
from weightspace.train import TrainConfig, train
from weightspace.train.distributed import Ranks

ROOT = Path(__file__).resolve().parents[1]


def torchrun(*args: str, nproc: int = 2) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node nproc -m weightspace.cli ARGS``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={nproc}", "-m", "weightspace.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once (torchrun starts each worker in a session
    of its own, so killing the launcher's process group would leave the workers running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; torchrun with gloo")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """37 training networks: with a global batch of 12 the last batch of an epoch holds 1 network, so
    one of two processes has no row of its own (the weight-0 row path)."""
    x, y = load_images("digits")
    out = tmp_path_factory.mktemp("dist") / "zoo"
    splits = {"train": list(range(37)), "val": list(range(37, 45)), "test": list(range(45, 53))}
    generate_inr_zoo(out, x[:53], y[:53], splits=splits, steps=10, shard_size=32, hidden=(8, 8), progress=False,
                     seed=0, source={"name": "digits"})
    return out


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if k.startswith("model/")}


def _epoch(path: Path) -> int:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["state"])["epoch"]


def test_two_process_run_killed_and_resumed_ends_with_the_one_process_weights(zoo, tmp_path):
    epochs = 8
    options = {"channels": [4, 4]}
    config = TrainConfig(task="digits-inr", zoo=str(zoo), model="nfn-np", model_options=options, epochs=epochs,
                         batch_size=12, lr=3e-3, augment=("permutation", "noise=0.01", "mixup=0.4"))
    one = train(config, tmp_path / "one", progress=False)                      # the 1-process reference
    args = ["train", "--task", "digits-inr", "--zoo", str(zoo), "--model", "nfn-np", "--model-options",
            json.dumps(options), "--epochs", str(epochs), "--batch-size", "12", "--lr", "3e-3", "--augment",
            "permutation", "--augment", "noise=0.01", "--augment", "mixup=0.4", "--no-progress",
            "--out", str(tmp_path / "two")]
    ckpt = tmp_path / "two" / "checkpoint.safetensors"
    proc = torchrun(*args)
    deadline = time.monotonic() + 180
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    kill_tree(proc.pid)                                       # the launcher and both workers, mid-run
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    killed_at = _epoch(ckpt)
    assert 1 <= killed_at < epochs
    assert not (tmp_path / "two" / "metrics.json").exists()
    log = finish(torchrun(*args, "--resume"))
    assert log.count("run folder:") == 1                      # rank 0 alone prints (and writes)
    assert f"epoch {killed_at + 1}/{epochs}" in log and f"epoch {killed_at}/{epochs}" not in log
    assert _epoch(ckpt) == epochs
    a, b = _model_tensors(tmp_path / "one" / "checkpoint.safetensors"), _model_tensors(ckpt)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    # the comparison is between trained weights, not two untouched initializations
    init = train(TrainConfig(**{**json.loads(config.to_json()), "epochs": 1, "lr": 1e-12}), tmp_path / "init",
                 progress=False)
    moved = _model_tensors(tmp_path / "init" / "checkpoint.safetensors")
    assert max(float((a[k] - moved[k]).abs().max()) for k in a) > 1e-2
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["best_epoch"] == one["best_epoch"] and two["epochs_run"] == one["epochs_run"] == epochs
    assert abs(two["test"]["loss"] - one["test"]["loss"]) < 1e-4
    assert init["test"] != one["test"]


def _zoo_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_ranks_and_a_job_array_write_the_one_rank_zoo_bitwise(tmp_path, capsys):
    fit = ["fit-inrs", "--source", "digits", "--limit", "40", "--steps", "8", "--hidden", "8,8", "--shard-size",
           "8", "--workers", "1", "--no-progress"]
    ranks = torchrun(*fit, "--out", str(tmp_path / "ranks"))                 # runs while the rest goes on
    assert cli([*fit, "--out", str(tmp_path / "one")]) == 0
    reference = _zoo_files(tmp_path / "one")
    assert len([k for k in reference if k.startswith("shards/")]) == 5
    # a SLURM-style array of 3 independent jobs: zoo-check names what the missing parts owe
    assert cli([*fit, "--out", str(tmp_path / "array"), "--shard", "1/3"]) == 0
    assert "part 1/3 done" in capsys.readouterr().out
    assert cli(["zoo-check", str(tmp_path / "array")]) == 1
    report = capsys.readouterr().out
    assert "2 of 5 shards whole, 3 missing" in report
    for k, (a, b) in zip((0, 2, 3), ((0, 8), (16, 24), (24, 32))):
        assert f"missing: shards/inr-{k:05d}.safetensors (networks [{a}, {b}))" in report
    first = {p.name: os.stat(p).st_mtime_ns for p in (tmp_path / "array" / "shards").iterdir()}
    assert cli([*fit, "--out", str(tmp_path / "array"), "--shard", "1/3"]) == 0      # rerun: nothing rewritten
    assert cli([*fit, "--out", str(tmp_path / "array"), "--shard", "2/3"]) == 0
    assert cli([*fit, "--out", str(tmp_path / "array"), "--shard", "0/3"]) == 0      # the last part completes it
    assert "40 INRs in" in capsys.readouterr().out
    assert {p.name: os.stat(p).st_mtime_ns for p in (tmp_path / "array" / "shards").iterdir()
            if p.name in first} == first
    assert cli(["zoo-check", str(tmp_path / "array")]) == 0
    assert "5 of 5 shards whole" in capsys.readouterr().out
    assert _zoo_files(tmp_path / "array") == reference
    log = finish(ranks)
    assert "40 INRs in" in log                                               # a rank completed the zoo
    assert _zoo_files(tmp_path / "ranks") == reference                       # manifest and shards, every byte
    # a damaged shard is named, and the zoo is not whole
    shard = tmp_path / "ranks" / "shards" / "inr-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert cli(["zoo-check", str(tmp_path / "ranks")]) == 1
    assert "damaged: shards/inr-00003.safetensors (networks [24, 32)): the shard is damaged" in capsys.readouterr().out
    assert cli(["zoo-check", str(tmp_path / "nothing")]) == 2
    assert "manifest not found" in capsys.readouterr().err


@settings(max_examples=40, deadline=None)
@given(shards=st.integers(1, 40), jobs=st.integers(1, 5), world=st.integers(1, 4))
def test_parts_of_jobs_and_ranks_cover_every_shard_once(shards, jobs, world):
    owners = {k: [(j, r) for j in range(jobs) for r in range(world)
                  if ShardPart(j, jobs).split(r, world).owns(k)] for k in range(shards)}
    assert all(len(v) == 1 for v in owners.values())
    per = [sum(ShardPart(j, jobs).split(r, world).owns(k) for k in range(shards))
           for j in range(jobs) for r in range(world)]
    assert max(per) - min(per) <= 1                                    # balanced


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), world=st.integers(1, 5), seed=st.integers(0, 1000))
def test_rank_rows_recover_the_global_batch_mean(n, world, seed):
    losses = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows, shares = [], 0.0
    for r in range(world):
        mine, weight = Ranks(r, world).rows(n)
        if weight:
            rows += mine.tolist()
        shares += float(losses[mine].sum()) * weight
    assert sorted(rows) == list(range(n))
    assert abs(shares / world - float(losses.mean())) < 1e-12          # DDP's average of the shares
    parts = [list(Ranks(r, world).part(n)) for r in range(world)]
    assert sum(parts, []) == list(range(n))


def test_shard_part_and_exclusive_write_errors(tmp_path):
    assert ShardPart.parse("3/8") == ShardPart(3, 8)
    for bad in ("8/8", "-1/4", "3", "a/b", "1/0"):
        with pytest.raises(ValueError, match="i/n"):
            ShardPart.parse(bad)
    assert cli(["fit-inrs", "--out", str(tmp_path / "z"), "--shard", "4/4"]) == 2
    path = tmp_path / "s.safetensors"
    write_shard(path, {"index": torch.arange(3)})
    inode = os.stat(path).st_ino
    from weightspace.data.shards import _write_shard
    _write_shard(path, {"index": torch.arange(3)}, exclusive=True)          # the same tensors: kept as is
    assert os.stat(path).st_ino == inode
    with pytest.raises(ShardError, match="another writer"):
        _write_shard(path, {"index": torch.arange(1, 4)}, exclusive=True)
    assert torch.equal(load_file(str(path))["index"], torch.arange(3))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # a one-network shard whose single element is a view with a wide stride (shard_size 1) hashes and reads
    one = torch.arange(33.0).reshape(1, 33).t()[32:33]
    assert one.stride() == (1, 33)
    write_shard(tmp_path / "one.safetensors", {"index": torch.arange(1), "w": one})
    assert float(load_file(str(tmp_path / "one.safetensors"))["w"]) == 32.0


def test_a_part_keeps_other_parts_temp_files_and_cannot_load_an_unfinished_zoo(tmp_path):
    x, y = load_images("digits")
    (tmp_path / "z" / "shards").mkdir(parents=True)
    kw = dict(steps=3, hidden=(4,), shard_size=4, progress=False)
    with writing_part(ShardPart(0, 2)):
        m = generate_inr_zoo(tmp_path / "z", x[:12], y[:12], **kw)
    assert not m["complete"] and sorted(p.name for p in (tmp_path / "z" / "shards").iterdir()) == [
        "inr-00000.safetensors", "inr-00002.safetensors"]
    theirs = tmp_path / "z" / "shards" / ".inr-00001.safetensors.abc123.tmp"         # part 1 writing now
    mine = tmp_path / "z" / "shards" / ".inr-00000.safetensors.dead00.tmp"          # part 0, killed earlier
    theirs.write_bytes(b"partial")
    mine.write_bytes(b"partial")
    run = ZooRun(tmp_path / "z", "inr", {}, 12, 4, part=ShardPart(0, 2))
    assert not mine.exists() and theirs.exists()
    with pytest.raises(ZooIncomplete, match="1 of 3 shards are not written yet") as e:
        run.load_all()
    assert e.value.missing == (1,)
    with pytest.raises(ValueError, match="another part"):
        run.write(1, {"index": torch.arange(4, 8)})


def test_precision_option(zoo, tmp_path):
    with pytest.raises(UsageError, match="precision must be one of fp32, bf16"):
        TrainConfig(task="digits-inr", zoo=str(zoo), precision="fp16")
    config = TrainConfig(task="digits-inr", zoo=str(zoo), model="nfn-np", model_options={"channels": [4]},
                         epochs=2, batch_size=16, precision="bf16")
    bf16 = train(config, tmp_path / "bf16", progress=False)
    fp32 = train(TrainConfig(**{**json.loads(config.to_json()), "precision": "fp32"}), tmp_path / "fp32",
                 progress=False)
    assert bf16["test"]["loss"] == pytest.approx(fp32["test"]["loss"], rel=0.05)    # close, not equal
    assert bf16["test"]["loss"] != fp32["test"]["loss"]
