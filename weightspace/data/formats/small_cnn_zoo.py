"""The Small CNN Zoo (Unterthiner et al., 2020, "Predicting Neural Network Accuracy from Weights").

Files of one zoo (e.g. ``mnist/``): ``weights.npy`` (``[checkpoints, 4970]`` float32, one row per
checkpoint, TensorFlow layout: conv kernels ``(h, w, in, out)``, dense kernels ``(in, out)``),
``metrics.csv.gz`` (one row per checkpoint, aligned with ``weights.npy``: ``config.*`` hyperparameter
columns, ``step``, ``test_accuracy``, ``train_accuracy``, ...), ``layout.csv`` (``varname``,
``start_idx``, ``end_idx``, ``shape``: where each variable sits in a row). The network is three 3x3
convolutions of 16 channels with stride 2, global average pooling and a dense layer:
:class:`weightspace.models.SmallCNN` (TensorFlow's "same" padding at stride 2 pads one pixel less on
the top / left than the PyTorch module; the weights are the same).
"""
from __future__ import annotations

import ast
import csv
import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ...space import WeightSpace
from ..datasets import Zoo
from ..idx import DataFormatError


def read_small_cnn_zoo(root: str | Path, step: int | str | None = "final") -> Zoo:
    """Read a Small CNN Zoo folder. ``step``: keep checkpoints at this training step, ``"final"``
    (default: the largest step in the file, as NFN / Neural Graphs use) or ``None`` (all).

    Returns a :class:`Zoo` with ``SmallCNN`` weights, ``records`` holding every numeric metrics column
    (``test_accuracy``, ``step``, ``config.learning_rate``, ...) and ``manifest["columns"]`` the
    non-numeric ones (e.g. ``config.optimizer``) as lists of strings.
    """
    from ...models import SmallCNN
    from ...spec import WeightSpaceSpec

    root = Path(root)
    wpath, mpath, lpath = root / "weights.npy", root / "metrics.csv.gz", root / "layout.csv"
    layout = _read_layout(lpath)
    weights = _read_npy(wpath)
    cols = _read_metrics(mpath)
    n = len(next(iter(cols.values())))
    if n != weights.shape[0]:
        raise DataFormatError(f"{mpath} has {n} rows but {wpath} has {weights.shape[0]}; they must be row-aligned")
    need = max(end for _, _, end, _ in layout)
    if weights.shape[1] < need:
        raise DataFormatError(f"{wpath}: rows have {weights.shape[1]} values, {lpath} places variables up to {need}")
    numeric, text = {}, {}
    for k, v in cols.items():
        try:
            numeric[k] = np.array([float(x) if x not in ("", "nan", "NaN") else np.nan for x in v])
        except ValueError:
            text[k] = v
    keep = np.arange(n)
    if step is not None:
        if "step" not in numeric:
            raise DataFormatError(f"{mpath}: no 'step' column to select checkpoints by")
        target = numeric["step"].max() if step == "final" else float(step)
        keep = np.nonzero(numeric["step"] == target)[0]
    kernels = [(name, s, e, shape) for name, s, e, shape in layout if name.endswith("kernel:0")]
    biases = [(name, s, e, shape) for name, s, e, shape in layout if name.endswith("bias:0")]
    other = [name for name, *_ in layout if not (name.endswith("kernel:0") or name.endswith("bias:0"))]
    if other or len(kernels) != 4 or len(biases) != 4:
        raise DataFormatError(f"{lpath}: expected 4 kernels and 4 biases (3 convolutions, 1 dense layer), found "
                              f"{len(kernels)} kernels, {len(biases)} biases{', and ' + str(other) if other else ''}")
    rows = torch.from_numpy(np.ascontiguousarray(weights[keep], dtype=np.float32))
    in_ch, width = kernels[0][3][2], kernels[0][3][3]
    classes = kernels[3][3][1]
    model = SmallCNN(in_channels=in_ch, width=width, num_classes=classes)
    names = [k for k, _ in model.named_parameters()]
    tensors = {}
    for (kname, ks, ke, kshape), (bname, bs, be, bshape), wn, bn in zip(kernels, biases, names[0::2], names[1::2]):
        k = rows[:, ks:ke].reshape(len(rows), *kshape)
        k = k.permute(0, 4, 3, 1, 2) if len(kshape) == 4 else k.transpose(1, 2)   # TF -> torch layout
        tensors[wn], tensors[bn] = k.contiguous(), rows[:, bs:be].reshape(len(rows), *bshape)
        expect = dict(model.named_parameters())[wn].shape
        if tuple(tensors[wn].shape[1:]) != tuple(expect):
            raise DataFormatError(f"{lpath}: {kname} has shape {kshape}, "
                                  f"which does not fit SmallCNN's {wn} {tuple(expect)}")
    spec = WeightSpaceSpec.from_module(model.eval(), torch.zeros(2, in_ch, 28, 28))
    ws = WeightSpace(spec, tensors)
    records = {k: torch.from_numpy(v[keep]) for k, v in numeric.items()}
    manifest = {"format": "small-cnn-zoo", "kind": "cnn", "num_items": len(keep), "step": step,
                "columns": {k: [v[i] for i in keep] for k, v in text.items()}, "layout": [entry[0] for entry in layout]}
    return Zoo(root, manifest, ws, records, {})


def _read_layout(path: Path) -> list[tuple[str, int, int, tuple[int, ...]]]:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataFormatError(f"{path}: not a readable CSV: {e}") from e
    out = []
    for i, r in enumerate(rows):
        try:
            shape = tuple(int(s) for s in ast.literal_eval(r["shape"]))
            start, end = int(r["start_idx"]), int(r["end_idx"])
            name = r["varname"]
        except (KeyError, ValueError, SyntaxError, TypeError) as e:
            raise DataFormatError(f"{path}: row {i + 1} needs varname, start_idx, end_idx and shape columns "
                                  f"(got {r}): {e}") from e
        if end - start != math.prod(shape):
            raise DataFormatError(f"{path}: {name} spans {end - start} values but has shape {shape}")
        out.append((name, start, end, shape))
    if not out:
        raise DataFormatError(f"{path}: no variables listed")
    return out


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise DataFormatError(f"{path}: not a readable .npy array (corrupt or truncated?): {e}") from e
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: expected [checkpoints, parameters], found shape {arr.shape}")
    return arr


def _read_metrics(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        with gzip.open(path, "rt", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as e:   # zlib: a corrupt deflate stream
        raise DataFormatError(f"{path}: not a readable gzip CSV (corrupt or truncated?): {e}") from e
    if len(rows) < 2:
        raise DataFormatError(f"{path}: no metrics rows")
    header = rows[0]
    if header and header[0] == "":
        header = ["_row"] + header[1:]                     # a pandas index column
    bad = [i for i, r in enumerate(rows[1:], 2) if len(r) != len(header)]
    if bad:
        raise DataFormatError(f"{path}: line {bad[0]} has a different number of fields than the header")
    return {h: [r[j] for r in rows[1:]] for j, h in enumerate(header)}
