"""Sharded INR zoos: a killed generation resumes to exactly the shards of an uninterrupted run;
damaged shards and manifests raise errors naming the file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weightspace.cli import main as cli
from weightspace.data import ShardError, generate_inr_zoo, load_images, load_zoo, read_shard
from weightspace.data.shards import tensors_sha256

KW = dict(steps=60, shard_size=16, progress=False, seed=3, source={"name": "digits"})


@pytest.fixture(scope="module")
def data():
    x, y = load_images("digits")
    return x[:56], y[:56], {"train": list(range(40)), "test": list(range(40, 56))}


@pytest.fixture(scope="module")
def full(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("zoo") / "full"
    x, y, splits = data
    generate_inr_zoo(out, x, y, splits=splits, **KW)
    return out


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "shards").iterdir())}


def test_killed_generation_resumes_to_the_same_shards(tmp_path, data, full):
    x, y, splits = data
    out = tmp_path / "resumed"
    m = generate_inr_zoo(out, x, y, splits=splits, max_shards=2, **KW)      # "killed" after 2 shards
    assert not m["complete"] and len(shard_bytes(out)) == 2
    with pytest.raises(ShardError, match="incomplete"):
        load_zoo(out)
    m = generate_inr_zoo(out, x, y, splits=splits, workers=2, **KW)         # resumed, other worker count
    assert m["complete"]
    assert shard_bytes(out) == shard_bytes(full)
    assert (out / "manifest.json").read_bytes() == (full / "manifest.json").read_bytes()
    assert len(m["psnr"]) == 56 and m["splits"] == {k: list(v) for k, v in splits.items()}
    assert m["recipe"]["lr"] == 5e-4 and m["seed"] == 3


def test_interrupted_by_an_exception_then_resumed(tmp_path, data, full):
    x, y, splits = data
    out = tmp_path / "interrupted"

    def boom(k, path):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_inr_zoo(out, x, y, splits=splits, on_shard=boom, **KW)
    (out / "shards" / ".inr-00002.safetensors.abc.tmp").write_bytes(b"half a shard")   # a write cut short
    generate_inr_zoo(out, x, y, splits=splits, **KW)
    assert shard_bytes(out) == shard_bytes(full)


def test_zoo_contents(full, data):
    x, y, _ = data
    zoo = load_zoo(full)
    assert zoo.weights.batch_size == 56 and torch.equal(zoo.records["label"], y)
    assert torch.equal(zoo.records["index"], torch.arange(56))
    assert zoo.records["psnr"].min() > 30
    assert len(zoo.dataset("train")) == 40 and len(zoo.dataset("test")) == 16
    tensors, meta = read_shard(full / "shards" / "inr-00000.safetensors")
    assert meta == {"kind": "inr", "shard": "0", "start": "0", "stop": "16", "sha256": tensors_sha256(tensors)}
    assert tensors["layers.0.weight"].shape == (16, 32, 2)
    assert zoo.manifest["shard_sha256"][0] == meta["sha256"] and None not in zoo.manifest["shard_sha256"]


def test_damaged_shards_name_the_file(tmp_path, full, data):
    import shutil

    x, y, splits = data
    out = tmp_path / "damaged"
    shutil.copytree(full, out)
    shard = out / "shards" / "inr-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-500])
    with pytest.raises(ShardError, match=r"inr-00001\.safetensors.*(corrupt|truncated)"):
        load_zoo(out)
    with pytest.raises(ShardError, match=r"inr-00001\.safetensors"):
        generate_inr_zoo(out, x, y, splits=splits, **KW)                  # resuming checks shards too
    shard.write_bytes(b"")
    with pytest.raises(ShardError, match=r"inr-00001\.safetensors"):
        load_zoo(out)
    (out / "manifest.json").write_text('{"format": "weightspace-zoo", "ki')
    with pytest.raises(ShardError, match=r"manifest\.json.*JSON"):
        load_zoo(out)


def test_a_different_recipe_in_the_same_folder_is_refused(tmp_path, data, full):
    import shutil

    x, y, splits = data
    out = tmp_path / "other"
    shutil.copytree(full, out)
    with pytest.raises(ShardError, match=r"different zoo \(recipe\.lr is 0\.0005, this run has 0\.001\)"):
        generate_inr_zoo(out, x, y, splits=splits, **{**KW, "lr": 1e-3})
    with pytest.raises(ShardError, match=r"source\.sha256"):
        generate_inr_zoo(out, 1 - x, y, splits=splits, **KW)


def test_cli_fit_inrs(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["fit-inrs", "--source", "digits", "--limit", "40", "--steps", "50", "--shard-size", "16",
                "--out", str(out), "--max-shards", "1", "--workers", "1", "--no-progress"]) == 0
    assert "run the same command again" in capsys.readouterr().out
    assert cli(["fit-inrs", "--source", "digits", "--limit", "40", "--steps", "50", "--shard-size", "16",
                "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "40 INRs" in text and "splits: train" in text
    assert load_zoo(out).weights.batch_size == 40
