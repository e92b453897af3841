"""Issue 19, zoo integrity on disk: a copied, bit-flipped, replaced or misshapen shard and a damaged
manifest are errors naming the file, from ``load_zoo`` and from a resumed generation alike (defects
3, 4, 11, 12); zoos written before checksums existed still load and resume."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightspace.cli import main as cli
from weightspace.data import ShardError, generate_inr_zoo, load_images, load_zoo, read_shard, write_shard

KW = dict(steps=20, shard_size=10, progress=False, seed=3, source={"name": "digits"})
SPLITS = {"train": list(range(30)), "test": list(range(30, 40))}


@pytest.fixture(scope="module")
def images():
    x, y = load_images("digits")
    return x[:40], y[:40]


@pytest.fixture(scope="module")
def full(tmp_path_factory, images):
    out = tmp_path_factory.mktemp("zoo") / "full"
    generate_inr_zoo(out, *images, splits=SPLITS, **KW)
    return out


@pytest.fixture
def zoo(tmp_path, full):
    out = tmp_path / "zoo"
    shutil.copytree(full, out)
    return out


def shard(folder: Path, k: int) -> Path:
    return folder / "shards" / f"inr-{k:05d}.safetensors"


def rerun(folder: Path, images):
    return generate_inr_zoo(folder, *images, splits=SPLITS, **KW)


def both_refuse(folder: Path, images, pattern: str) -> None:
    """``load_zoo`` and a resumed generation raise the same kind of error, naming the file."""
    with pytest.raises(ShardError, match=pattern):
        load_zoo(folder)
    with pytest.raises(ShardError, match=pattern):
        rerun(folder, images)


def edit_manifest(folder: Path, edit) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def strip_checksums(folder: Path) -> None:
    """Make ``folder`` look like a zoo written before checksums: shards without ``sha256`` in their
    metadata (byte for byte what the older writer wrote) and a manifest without ``shard_sha256``."""
    for p in sorted((folder / "shards").iterdir()):
        tensors, meta = read_shard(p)
        meta.pop("sha256")
        save_file(tensors, str(p), metadata={"weightspace": json.dumps(meta, sort_keys=True)})
    edit_manifest(folder, lambda m: m.pop("shard_sha256"))


def test_a_shard_copied_over_another_is_refused(zoo, images):             # defect 3
    shutil.copy(shard(zoo, 2), shard(zoo, 1))
    both_refuse(zoo, images, r"inr-00001\.safetensors: holds shard 2 .*copied or renamed; delete it and rerun")
    strip_checksums(zoo)                                                  # without checksums too
    both_refuse(zoo, images, r"inr-00001\.safetensors: holds shard 2")
    tensors, _ = read_shard(shard(zoo, 1))                                # and without range metadata
    save_file(tensors, str(shard(zoo, 1)))
    both_refuse(zoo, images, r"inr-00001\.safetensors: holds indices \[20, 21, 22\]")


def flip_a_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data_start = 8 + struct.unpack("<Q", data[:8])[0]                   # after the safetensors header
    data[(data_start + len(data)) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_the_data_area_are_caught(zoo, images):          # defect 4
    flip_a_data_byte(shard(zoo, 1))
    both_refuse(zoo, images, r"inr-00001\.safetensors: the shard is damaged.*checksum stored in it")


def test_a_shard_without_its_own_checksum_is_checked_against_the_manifest(zoo, images):
    tensors, meta = read_shard(shard(zoo, 1))
    meta.pop("sha256")
    tensors["layers.1.weight"][3, 4, 5] += 1e-3                            # damage the file cannot show
    save_file(tensors, str(shard(zoo, 1)), metadata={"weightspace": json.dumps(meta, sort_keys=True)})
    both_refuse(zoo, images, r"inr-00001\.safetensors: .*checksum recorded in the manifest")


def test_a_consistent_shard_with_other_networks_is_refused(zoo, images):
    tensors, meta = read_shard(shard(zoo, 1))
    tensors["psnr"] = tensors["psnr"] + 1                                 # well formed, but not this zoo's
    write_shard(shard(zoo, 1), tensors, {k: v for k, v in meta.items() if k != "sha256"})
    both_refuse(zoo, images, r"inr-00001\.safetensors: .*(damaged, or replaced by another shard)")


def test_a_misshapen_shard_names_the_file(zoo, images):                  # defect 11 (zoo shards)
    tensors, meta = read_shard(shard(zoo, 1))
    tensors["layers.0.weight"] = tensors["layers.0.weight"][:, :16]
    write_shard(shard(zoo, 1), tensors, {k: v for k, v in meta.items() if k != "sha256"})
    both_refuse(zoo, images, r"inr-00001\.safetensors: 'layers\.0\.weight' holds networks of shape \[16, 2\], "
                             r"the zoo's spec says \[32, 2\]")
    strip_checksums(zoo)                                                  # a record, in a zoo without checksums
    tensors, meta = read_shard(shard(zoo, 1))
    tensors["layers.0.weight"] = read_shard(shard(zoo, 0))[0]["layers.0.weight"]
    tensors["label"] = tensors["label"].float()
    save_file(tensors, str(shard(zoo, 1)), metadata={"weightspace": json.dumps(meta, sort_keys=True)})
    both_refuse(zoo, images, r"inr-00001\.safetensors: tensors differ from those of inr-00000\.safetensors "
                             r"\('label': float32 \[n\] here, int64 \[n\] there\)")


def test_a_manifest_without_spec_names_the_manifest(zoo):                 # defect 12
    edit_manifest(zoo, lambda m: m.pop("spec"))
    with pytest.raises(ShardError, match=r"manifest\.json: no 'spec'"):
        load_zoo(zoo)
    edit_manifest(zoo, lambda m: m.update(spec={"version": 1, "params": "?"}))
    with pytest.raises(ShardError, match=r"manifest\.json: 'spec' is not a readable weight-space spec"):
        load_zoo(zoo)


def test_a_split_index_out_of_range_fails_at_load_time(zoo):              # defect 12
    edit_manifest(zoo, lambda m: m["splits"]["test"].__setitem__(0, 999))
    with pytest.raises(ShardError, match=r"manifest\.json: split 'test' has indices outside \[0, 40\): \[999\]"):
        load_zoo(zoo)
    edit_manifest(zoo, lambda m: m["splits"].update(test=[3, 4]))       # 3 and 4 are also in train
    with pytest.raises(ShardError, match=r"manifest\.json: split 'test' shares indices"):
        load_zoo(zoo)
    edit_manifest(zoo, lambda m: m.update(num_items="40"))
    with pytest.raises(ShardError, match=r"manifest\.json: 'num_items' must be a positive integer"):
        load_zoo(zoo)


def test_a_zoo_without_checksums_loads_and_resumes(zoo, full, images):
    strip_checksums(zoo)
    assert torch.equal(load_zoo(zoo).weights["layers.1.weight"], load_zoo(full).weights["layers.1.weight"])
    shard(zoo, 3).unlink()
    m = rerun(zoo, images)                                                # refits shard 3 only
    assert m["complete"] and m["shard_sha256"] == json.loads((full / "manifest.json").read_text())["shard_sha256"]
    assert shard(zoo, 3).read_bytes() == shard(full, 3).read_bytes()
    assert "sha256" not in read_shard(shard(zoo, 0))[1]                   # old shards are left as they were
    load_zoo(zoo)


def test_the_command_line_reports_a_damaged_zoo_in_one_line(tmp_path, capsys):
    args = ["fit-inrs", "--source", "digits", "--limit", "20", "--steps", "20", "--shard-size", "10",
            "--out", str(tmp_path / "z"), "--workers", "1", "--no-progress"]
    assert cli(args) == 0
    flip_a_data_byte(shard(tmp_path / "z", 1))
    capsys.readouterr()
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inr-00001.safetensors: the shard is damaged" in err, err
    assert err.startswith("weightspace fit-inrs: error: ")
