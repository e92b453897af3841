"""Image sources: digits, IDX files (gz or not, original names), CIFAR-10 batches; corrupt files."""
from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from weightspace.data import DataFormatError, load_images, read_idx
from weightspace.errors import UsageError

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    raw = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def corrupt_deflate(raw: bytes) -> bytes:
    """A gzip file of ``raw`` whose deflate stream is damaged: decompressing it raises ``zlib.error``
    (not the CRC / length check's ``BadGzipFile``). Found by flipping one byte at a time."""
    good = gzip.compress(raw, mtime=0)
    for pos in range(10, len(good) - 8):
        bad = bytearray(good)
        bad[pos] ^= 0x5A
        try:
            gzip.decompress(bytes(bad))
        except zlib.error:
            return bytes(bad)
        except Exception:
            continue
    raise AssertionError("no single-byte flip breaks this deflate stream")


def make_idx_dataset(root: Path, n_train=5, n_test=3, gz=True, seed=0, test_size=28):
    rng = np.random.default_rng(seed)
    parts = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        side = 28 if prefix == "train" else test_size
        imgs = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", imgs, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz)
        parts[prefix] = (imgs, labels)
    return parts


def test_digits_are_embedded():
    x, y = load_images("digits")
    assert x.shape == (1797, 8, 8) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("source", ["mnist", "fashion-mnist"])
def test_idx_files_under_their_original_names(tmp_path, gz, source):
    parts = make_idx_dataset(tmp_path, gz=gz)
    x, y = load_images(source, tmp_path, "train")
    assert torch.equal(x, torch.from_numpy(parts["train"][0]).float() / 255)
    assert torch.equal(y, torch.from_numpy(parts["train"][1]).long())
    xt, _ = load_images(source, tmp_path, "test")
    assert xt.shape == (3, 28, 28)
    xa, ya = load_images(source, tmp_path, "all")
    assert torch.equal(xa, torch.cat([x, xt])) and len(ya) == 8


def test_corrupt_idx_files_name_the_file(tmp_path):
    make_idx_dataset(tmp_path, gz=False)
    img = tmp_path / "train-images-idx3-ubyte"
    data = img.read_bytes()
    img.write_bytes(data[:-100])
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte.*truncated"):
        load_images("mnist", tmp_path)
    img.write_bytes(b"\x01\x02" + data[2:])
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte.*not an IDX file"):
        load_images("mnist", tmp_path)
    img.write_bytes(data[:10])
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte.*truncated IDX header"):
        load_images("mnist", tmp_path)
    img.write_bytes(data)
    lbl = tmp_path / "train-labels-idx1-ubyte"
    write_idx(lbl, np.zeros(4, np.uint8))
    with pytest.raises(DataFormatError, match=r"holds 5 images but .*train-labels-idx1-ubyte holds 4"):
        load_images("mnist", tmp_path)
    lbl.unlink()
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte.*not found"):
        load_images("mnist", tmp_path)


def test_corrupt_gzip_names_the_file(tmp_path):
    make_idx_dataset(tmp_path, gz=True)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_images("mnist", tmp_path, "test")
    with pytest.raises(DataFormatError, match="not found"):
        read_idx(tmp_path / "nothing-here")


def test_corrupt_deflate_stream_names_the_file(tmp_path):
    make_idx_dataset(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(corrupt_deflate(gzip.decompress(p.read_bytes())))
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte\.gz.*corrupt"):
        load_images("mnist", tmp_path, "train")


def test_test_images_of_another_size_name_the_file(tmp_path):
    from weightspace.data.model_zoo import load_training_data
    from weightspace.data.recipes import prepare

    make_idx_dataset(tmp_path, test_size=14)
    assert load_images("mnist", tmp_path, "test")[0].shape == (3, 14, 14)     # each part alone is fine
    for load in (lambda: load_images("mnist", tmp_path, "all"), lambda: prepare("mnist-inr", tmp_path),
                 lambda: load_training_data("mnist", tmp_path)):
        with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte\.gz: test images are 14x14 but the "
                                                  r"training images are 28x28"):
            load()


def test_labels_outside_the_ten_classes_name_the_file(tmp_path):
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 200], dtype=np.uint8), gz=True)
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte\.gz: label 200 outside"):
        load_images("mnist", tmp_path, "train")


def _cifar_batch(path: Path, n: int, seed: int):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a"] * n}, f)
    return data, labels


def test_cifar10_python_batches(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = [_cifar_batch(d / f"data_batch_{i}", 2, i) for i in range(1, 6)]
    _cifar_batch(d / "test_batch", 3, 9)
    x, y = load_images("cifar10", tmp_path, "train")
    assert x.shape == (10, 3, 32, 32) and y.shape == (10,)
    assert torch.equal(x[0], torch.from_numpy(batches[0][0][0].reshape(3, 32, 32)).float() / 255)
    assert load_images("cifar10", d, "test")[0].shape == (3, 3, 32, 32)
    # a pickle that would run code is refused, and the error names the file
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataFormatError, match=r"test_batch.*refusing"):
        load_images("cifar10", tmp_path, "test")
    (d / "data_batch_3").write_bytes((d / "data_batch_1").read_bytes()[:100])
    with pytest.raises(DataFormatError, match="data_batch_3"):
        load_images("cifar10", tmp_path, "train")


@pytest.mark.parametrize("labels,match", [([b"cat", b"dog"], "not an array of numbers"),
                                          ([3, 12], "labels span 3..12")])
def test_cifar_batch_with_bad_labels_names_the_file(tmp_path, labels, match):
    from weightspace.data import read_cifar_batch

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}, f)
    with pytest.raises(DataFormatError, match=rf"test_batch: .*{match}"):
        read_cifar_batch(tmp_path / "test_batch")


def test_unknown_source_and_missing_root():
    with pytest.raises(UsageError, match="unknown image source") as e:
        load_images("imagenet")
    assert e.value.where == "source"
    with pytest.raises(UsageError, match="raw files") as e:
        load_images("mnist")
    assert e.value.where == "root"


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").is_file(), reason="raw MNIST not present")
def test_real_mnist_counts():
    x, y = load_images("mnist", MNIST, "test")
    assert x.shape == (10000, 28, 28)
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
