"""Zoo shards: one safetensors file per block of networks, written atomically, checked when read.

Every shard written here stores the sha256 of its tensors (:func:`tensors_sha256`) in its metadata
(key ``sha256``), and :func:`read_shard` recomputes it: flipped bytes anywhere in the data area are an
error naming the file wherever the shard is read, even with no manifest at hand. The checksum is of the
tensors (names, dtypes, shapes, bytes), not of the file, so it can be stored inside the file and also
recorded in a zoo's manifest (:mod:`.integrity`). Shards written before checksums existed have none
and are read as before (their other checks still apply). sha256, because hashlib runs it on the CPU's
SHA extensions: about 2 GB/s here, against 1.3 GB/s for blake2b.

Several writers (``torchrun`` ranks, the jobs of a SLURM array) split one zoo's shards with
:class:`ShardPart`: part ``i`` of ``n`` writes shards ``k`` with ``k % n == i``, so no two parts ever
compute the same shard. A shard is published with a hard link from its temp file (``exclusive``),
which fails instead of replacing a shard that is already there: even two jobs wrongly given the same
part cannot write one shard twice, and the second keeps the first's file when both are equal.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch

from ..io import CheckpointError, apply_default_mode, save_checkpoint


META_KEY = "weightspace"
CHECKSUM_KEY = "sha256"


class ShardError(CheckpointError):
    """A shard or manifest that is missing, corrupt, truncated or inconsistent; the message names the file."""


class ZooIncomplete(ShardError):
    """Shards of a zoo that other writers (parts) have not written yet; ``missing``: their numbers."""

    def __init__(self, message: str, missing: tuple[int, ...] = ()):
        super().__init__(message)
        self.missing = tuple(missing)


REBUILD = ("delete it and rerun the command that wrote the zoo (fit-inrs / make-zoo with the same arguments "
           "rebuild missing shards only)")


@dataclass(frozen=True)
class ShardPart:
    """Part ``index`` of ``count`` of a zoo's writers: it writes the shards ``k % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not (isinstance(self.count, int) and isinstance(self.index, int) and 0 <= self.index < self.count):
            raise ValueError(f"a shard part is i/n with 0 <= i < n, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> "ShardPart":
        """``"i/n"`` (``--shard 3/8``: the fourth of eight jobs; SLURM: ``$SLURM_ARRAY_TASK_ID/8``)."""
        i, sep, n = str(text).partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(i), int(n))
        except ValueError:
            raise ValueError(f"expected i/n with 0 <= i < n (e.g. 0/4), got {text!r}") from None

    def owns(self, k: int) -> bool:
        return k % self.count == self.index

    def split(self, rank: int, world: int) -> "ShardPart":
        """Part ``rank`` of ``world`` processes sharing this part (``torchrun`` ranks inside a job)."""
        return ShardPart(self.index * world + rank, self.count * world)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


_PART: ContextVar[ShardPart | None] = ContextVar("weightspace_zoo_part", default=None)


@contextmanager
def writing_part(part: ShardPart) -> Iterator[ShardPart]:
    """Zoos generated inside the block write only ``part``'s shards (for functions that do not take a
    ``part`` argument, such as ``make_model_zoo``): a scoped setting, like ``torch.no_grad``, restored
    on exit and private to the thread / task that set it."""
    token = _PART.set(part)
    try:
        yield part
    finally:
        _PART.reset(token)


def current_part() -> ShardPart:
    """The part set by the innermost :func:`writing_part` block (the whole zoo, ``0/1``, outside any)."""
    return _PART.get() or ShardPart()


def write_shard(path: str | Path, tensors: Mapping[str, torch.Tensor],
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``{name: [n, ...]}`` to ``path`` (``.safetensors``) atomically: a temp file in the same
    folder, then a rename, so a killed run never leaves a half-written shard under the real name.
    ``metadata`` is stored as one sorted JSON string (key ``weightspace``), so equal shards are equal
    byte for byte. The metadata also records the tensors' sha256 (key ``sha256``), checked on read."""
    return _write_shard(path, tensors, metadata)[0]


def _write_shard(path: str | Path, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None, exclusive: bool = False) -> tuple[Path, str]:
    """:func:`write_shard`, also returning the checksum it stored (for a zoo manifest). ``exclusive``:
    never replace an existing file (see the module docstring); an existing shard with other tensors is
    a :class:`ShardError`."""
    n = {t.shape[0] if t.dim() else None for t in tensors.values()}
    if len(n) != 1 or None in n:
        raise ValueError(f"shard tensors disagree on the number of networks: {sorted(n, key=str)}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    digest = tensors_sha256(tensors)
    fields = {k: str(v) for k, v in (metadata or {}).items()}
    fields[CHECKSUM_KEY] = digest
    meta = {META_KEY: json.dumps(fields, sort_keys=True)}
    if not exclusive:
        return save_checkpoint(tensors, path, metadata=meta), digest
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        save_file(tensors, str(tmp), metadata=meta)
        apply_default_mode(tmp)
        try:
            os.link(tmp, path)                           # atomic, and refuses to replace an existing shard
        except FileExistsError:
            _, other = read_shard(path)
            if other.get(CHECKSUM_KEY) != digest:
                raise ShardError(f"{path}: another writer wrote this shard with other tensors (two jobs of "
                                 f"one zoo with different settings?); {REBUILD}") from None
        except OSError:                                  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path, digest


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of named tensors: for each name in sorted order, its name, dtype and shape, then its
    bytes. Independent of the order and layout of the tensors in a file."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape)]).encode())
        flat = t.reshape(-1)
        if flat.numel() == 1 and flat.stride(0) != 1:    # one element viewed from a wider row (a 1-network shard)
            flat = flat.new_empty(1).copy_(flat)
        h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()


def read_shard(path: str | Path, expect: int | None = None,
               keys: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a shard. Raises :class:`ShardError` naming the file when it is
    missing, not a readable safetensors file (truncated, corrupt), its tensors do not match the
    checksum stored in it, it lacks one of ``keys``, or its tensors do not all hold ``expect`` networks."""
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
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError, MemoryError) as e:
        raise ShardError(f"{path}: not a readable safetensors shard (corrupt or truncated?): {e}") from e
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ShardError(f"{path}: the shard's metadata is damaged (expected a JSON object of strings); "
                         f"{REBUILD}")
    if CHECKSUM_KEY in meta and tensors_sha256(tensors) != meta[CHECKSUM_KEY]:
        raise ShardError(f"{path}: the shard is damaged: its tensors do not match the checksum stored in it; "
                         f"{REBUILD}")
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
        apply_default_mode(path)
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
