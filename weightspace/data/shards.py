"""Zoo shards: one safetensors file per block of networks, written atomically, checked when read."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch

from ..io import CheckpointError, save_checkpoint


META_KEY = "weightspace"


class ShardError(CheckpointError):
    """A shard or manifest that is missing, corrupt, truncated or inconsistent; the message names the file."""


def write_shard(path: str | Path, tensors: Mapping[str, torch.Tensor],
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``{name: [n, ...]}`` to ``path`` (``.safetensors``) atomically: a temp file in the same
    folder, then a rename, so a killed run never leaves a half-written shard under the real name.
    ``metadata`` is stored as one sorted JSON string (key ``weightspace``), so equal shards are equal
    byte for byte."""
    n = {t.shape[0] for t in tensors.values()}
    if len(n) != 1:
        raise ValueError(f"shard tensors disagree on the number of networks: {sorted(n)}")
    meta = {META_KEY: json.dumps({k: str(v) for k, v in (metadata or {}).items()}, sort_keys=True)}
    path = save_checkpoint({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    _default_mode(path)
    return path


def _default_mode(path: Path) -> None:
    """Give a file written through a temp file (mode 0600) the usual ``0666 & ~umask`` permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def read_shard(path: str | Path, expect: int | None = None,
               keys: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a shard. Raises :class:`ShardError` naming the file when it is
    missing, not a readable safetensors file (truncated, corrupt), lacks one of ``keys``, or its
    tensors do not all hold ``expect`` networks."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard not found")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if META_KEY in meta:
                meta = json.loads(meta[META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise ShardError(f"{path}: not a readable safetensors shard (corrupt or truncated?): {e}") from e
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise ShardError(f"{path}: shard lacks {missing} (has {sorted(tensors)})")
    sizes = {k: t.shape[0] if t.dim() else None for k, t in tensors.items()}
    if expect is not None:
        wrong = {k: s for k, s in sizes.items() if s != expect}
        if wrong:
            raise ShardError(f"{path}: expected {expect} networks per tensor, found {wrong}")
    elif len(set(sizes.values())) > 1:
        raise ShardError(f"{path}: tensors hold different numbers of networks: {sizes}")
    return tensors, meta


def write_json(path: str | Path, obj) -> Path:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
        _default_mode(path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: manifest not found")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{path}: not valid JSON (corrupt or truncated?): {e}") from e
    if not isinstance(obj, dict):
        raise ShardError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj
