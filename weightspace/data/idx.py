"""Readers for raw image datasets in their original formats: IDX (MNIST, Fashion-MNIST) and the
CIFAR-10 python batches. Every error names the file and what is wrong with it."""
from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np


class DataFormatError(ValueError):
    """A data file that is missing, corrupt or not in the expected format; the message names it."""


# IDX type codes (LeCun's format): 0x08 unsigned byte, 0x09 signed byte, 0x0B short, 0x0C int,
# 0x0D float, 0x0E double; multi-byte values are big-endian.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it ends in ``.gz``. Every error of the reading or of the
    decompression (``OSError``, ``EOFError``, ``gzip.BadGzipFile``, ``zlib.error`` for a corrupt deflate
    stream) is re-raised as :class:`DataFormatError` naming the file."""
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataFormatError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'} "
                              f"(corrupt or truncated?): {e}") from e


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (``.gz`` or not) as a numpy array of its stored shape and type.

    Layout: two zero bytes, a type code, the number of dimensions ``d``, ``d`` big-endian uint32
    sizes, then the values in C order.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise DataFormatError(f"{path}: not an IDX file (magic number starts with {data[0]:#04x} {data[1]:#04x}, "
                              "expected 0x00 0x00)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataFormatError(f"{path}: unknown IDX type code {code:#04x}")
    if ndim == 0:
        raise DataFormatError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{path}: truncated IDX header ({len(data)} bytes, the header needs {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataFormatError(f"{path}: {what}: header says shape {shape} ({expected} bytes), "
                              f"file has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (``data_batch_1`` ... ``test_batch``): ``(images [N, 3, 32, 32] uint8,
    labels [N] int64)``. The file is a pickle of plain data; it is unpickled with a restricted loader
    that refuses any class or function (so a malicious file cannot run code)."""
    path = Path(path)
    raw = _read_bytes(path)
    try:
        obj = _SafeUnpickler(raw).load()
    except Exception as e:          # a damaged pickle fails in many ways (KeyError, IndexError, struct.error...)
        raise DataFormatError(f"{path}: not a readable CIFAR-10 batch (corrupt or truncated pickle?): {e}") from e
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: holds a {type(obj).__name__}, expected a dict with 'data' and 'labels'")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise DataFormatError(f"{path}: missing 'data' or 'labels' (keys: {sorted(obj)})")
    try:
        data, labels = np.asarray(obj["data"]), np.asarray(obj["labels"], dtype=np.int64).reshape(-1)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataFormatError(f"{path}: 'data' or 'labels' is not an array of numbers: {e}") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if len(labels) != len(data):
        raise DataFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{path}: labels span {labels.min()}..{labels.max()}, CIFAR-10 has classes 0..9")
    return data.reshape(-1, 3, 32, 32), labels


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers, numbers, strings/bytes and numpy arrays."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def __init__(self, raw: bytes):
        import io
        super().__init__(io.BytesIO(raw), encoding="bytes")

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
