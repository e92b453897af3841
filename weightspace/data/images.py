"""``load_images``: image datasets as float tensors in [0, 1], from embedded or raw files (no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .idx import DataFormatError, read_cifar_batch, read_idx

SOURCES = ("digits", "mnist", "fashion-mnist", "cifar10")

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

    Missing, corrupt or truncated files raise :class:`DataFormatError` naming the file.
    """
    source = source.lower().replace("_", "-")
    if source == "fashion":
        source = "fashion-mnist"
    if source not in SOURCES:
        raise ValueError(f"unknown image source {source!r}; choose one of {SOURCES}")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (torch.from_numpy(d.images.astype(np.float32) / 16.0),
                torch.from_numpy(d.target.astype(np.int64)))
    if root is None:
        raise ValueError(f"source {source!r} needs root=DIR with its raw files (nothing is downloaded)")
    root = Path(root)
    if split == "all":
        parts = [load_images(source, root, s) for s in ("train", "test")]
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
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataFormatError(f"{root / name}: file not found (also looked for {name}.gz) in {root}")
