"""``load_images``: image datasets as float tensors in [0, 1], from embedded or raw files (no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .idx import DataFormatError, read_cifar_batch, read_idx

SOURCES = ("digits", "mnist", "fashion-mnist", "cifar10")
NUM_CLASSES = 10                                     # every source above has ten classes

# Original file names (LeCun's MNIST page; Zalando's Fashion-MNIST uses the same names).
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def load_images(source: str = "digits", root: str | Path | None = None, split: str = "train"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: ``images`` float32 in [0, 1], ``[N, H, W]`` for grey-scale sources and
    ``[N, 3, H, W]`` for CIFAR-10; ``labels`` int64 ``[N]``.

    * ``"digits"``: scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 scaled to [0, 1]);
      no files needed. It has no official split: every ``split`` returns all images (make splits
      with :func:`weightspace.data.split_indices`).
    * ``"mnist"`` / ``"fashion-mnist"``: the IDX files under ``root`` with their original names
      (``train-images-idx3-ubyte[.gz]``, ``t10k-...``); split ``"train"`` (60,000), ``"test"``
      (10,000) or ``"all"`` (train then test, 70,000).
    * ``"cifar10"``: the python batches under ``root`` (``data_batch_1..5``, ``test_batch``, the
      files of ``cifar-10-batches-py``); split ``"train"`` / ``"test"`` / ``"all"``.

    Missing, corrupt or truncated files, labels outside the source's classes and test images of
    another size than the training images raise :class:`DataFormatError` naming the file; an unknown
    source, split or a missing ``root`` raise :class:`~weightspace.errors.UsageError`.
    """
    source = source.lower().replace("_", "-")
    if source == "fashion":
        source = "fashion-mnist"
    if source not in SOURCES:
        raise UsageError(f"unknown image source {source!r}; choose one of {', '.join(SOURCES)}", "source")
    if split not in ("train", "test", "all"):
        raise UsageError(f"split must be 'train', 'test' or 'all', got {split!r}", "split")
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (torch.from_numpy(d.images.astype(np.float32) / 16.0),
                torch.from_numpy(d.target.astype(np.int64)))
    if root is None:
        raise UsageError(f"source {source!r} needs the folder with its raw files (nothing is downloaded)", "root")
    root = Path(root)
    if split == "all":
        parts = load_train_test(source, root)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    if source == "cifar10":
        if (root / "cifar-10-batches-py").is_dir():
            root = root / "cifar-10-batches-py"
        batches = [read_cifar_batch(_find(root, name)) for name in _CIFAR_FILES[split]]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels)
    img_name, lbl_name = _IDX_FILES[split]
    img_path, lbl_path = _find(root, img_name), _find(root, lbl_name)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"{img_path}: expected uint8 images [N, H, W], found {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataFormatError(f"{lbl_path}: expected uint8 labels [N], found {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataFormatError(f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataFormatError(f"{lbl_path}: label {int(labels.max())} outside the {NUM_CLASSES} classes 0..9 "
                              f"of {source}")
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def load_train_test(source: str, root: str | Path | None) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """``((train images, labels), (test images, labels))`` of a source with an official split, checked
    to agree: test images of another size than the training images are a :class:`DataFormatError`
    naming the test images' file (they cannot share a model or a zoo)."""
    train, test = (load_images(source, root, s) for s in ("train", "test"))
    if train[0].shape[1:] != test[0].shape[1:]:                 # (CIFAR-10's reader fixes 3x32x32)
        where = _find(Path(root), _IDX_FILES["test"][0])
        raise DataFormatError(f"{where}: test images are {'x'.join(map(str, test[0].shape[1:]))} but the training "
                              f"images are {'x'.join(map(str, train[0].shape[1:]))}; both must come from one source")
    return train, test


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataFormatError(f"{root / name}: file not found (also looked for {name}.gz) in {root}")
