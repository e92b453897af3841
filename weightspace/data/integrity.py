"""Integrity of a zoo folder: what its manifest must hold, and how each shard is checked against it.

Decisions:

* One check for every reader. :meth:`ShardCheck.check` is what ``load_zoo`` runs on each shard and
  what a resumed ``fit-inrs`` / ``make-zoo`` runs on the shards already on disk, so a shard refused by
  one is refused by the other.
* A shard is checked for what it holds, not only whether it parses: every tensor holds the shard's
  number of networks; the ``index`` tensor holds exactly the shard's range (a copied or renamed shard
  is caught); the range in its metadata, when recorded, matches its position; each weight tensor has
  the shape the manifest's spec gives (a misshapen shard names its file, not a ``torch.cat`` error);
  its tensors match the sha256 stored in the shard itself (checked by :func:`.shards.read_shard`) and
  the one recorded for that position in the manifest (``shard_sha256``, a list aligned with
  ``shards``; equal in every run, whatever order the shards were written in).
* Backward compatibility: zoos written before checksums existed have neither checksum; everything else
  is still checked. A resumed generation records the checksum of every such shard that passes, so
  damage after that point is caught (damage before it cannot be told from data).
* A manifest is checked when a zoo is loaded (:func:`check_manifest`): required fields with the right
  types, a readable spec, splits inside ``[0, num_items)`` and disjoint; a bad one is a
  :class:`ShardError` naming the manifest and the field, at load time rather than when a sample is
  fetched.
* :func:`check_zoo` (``weightspace zoo-check``) runs the same checks over a whole folder and reports
  instead of stopping at the first problem: which shards are missing (still being written by other
  jobs, or lost) and which are damaged, each by file and range of networks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .shards import CHECKSUM_KEY, REBUILD, ShardError

FORMAT = "weightspace-zoo"
VERSION = 1
MANIFEST_DAMAGED = "the manifest is damaged or was not written by weightspace; rebuild the zoo"


def check_splits(splits: Mapping[str, Sequence[int]], n: int) -> dict[str, list[int]]:
    """Splits as int lists in the given order; every index in ``[0, n)`` and no index in two splits."""
    out, seen = {}, set()
    for name, ids in splits.items():
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"split {name!r} has indices outside [0, {n}): {bad[:5]}")
        both = seen.intersection(ids)
        if both:
            raise ValueError(f"split {name!r} shares indices with another split: {sorted(both)[:5]}")
        seen.update(ids)
        out[name] = ids
    return out


def check_identity(path: Path, old: dict, identity: Mapping) -> dict:
    """``old`` (a manifest read from ``path``) if it describes the zoo ``identity`` describes; else a
    :class:`ShardError` naming the first differing field, so a resumed run cannot mix two zoos."""
    diff = _first_difference(old, identity)
    if diff is not None:
        key, was, now = diff
        raise ShardError(f"{path}: this folder holds a different zoo ({key} is {_short(was)}, this run has "
                         f"{_short(now)}); use another output folder or delete this one")
    return old


def _first_difference(old: Mapping, new: Mapping, prefix: str = ""):
    for key, value in new.items():
        was = old.get(key)
        if isinstance(value, dict) and isinstance(was, dict):
            d = _first_difference(was, value, f"{prefix}{key}.")
            if d is not None:
                return d
        elif was != value:
            return f"{prefix}{key}", was, value
    return None


def _short(v) -> str:
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _count(manifest: Mapping, key: str, path: Path) -> int:
    v = manifest.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ShardError(f"{path}: {key!r} must be a positive integer, found {json.dumps(v)}; {MANIFEST_DAMAGED}")
    return v


def check_manifest(path: str | Path, manifest: Mapping):
    """``(spec, splits)`` of a zoo manifest read from ``path`` after checking the fields a reader
    uses: ``format``, ``kind``, ``num_items``, ``shard_size``, ``spec``, ``splits`` and, when present,
    ``shard_sha256``. Raises :class:`ShardError` naming the manifest and the field."""
    from ..spec import WeightSpaceSpec

    path = Path(path)
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: not a weightspace zoo manifest (format {manifest.get('format')!r})")
    if not isinstance(manifest.get("kind"), str):
        raise ShardError(f"{path}: no 'kind' (the kind of networks); {MANIFEST_DAMAGED}")
    n, size = _count(manifest, "num_items", path), _count(manifest, "shard_size", path)
    sums = manifest.get("shard_sha256")
    if sums is not None and (not isinstance(sums, list) or len(sums) != -(-n // size)
                             or not all(s is None or isinstance(s, str) for s in sums)):
        raise ShardError(f"{path}: 'shard_sha256' must list one checksum per shard; {MANIFEST_DAMAGED}")
    if "spec" not in manifest:
        raise ShardError(f"{path}: no 'spec' (the weight space of the zoo's networks); {MANIFEST_DAMAGED}")
    try:
        spec = WeightSpaceSpec.from_dict(manifest["spec"])
    except Exception as e:  # a damaged dict fails in many ways (KeyError, TypeError, SpecError, ...)
        raise ShardError(f"{path}: 'spec' is not a readable weight-space spec ({type(e).__name__}: {e}); "
                         f"{MANIFEST_DAMAGED}") from e
    splits = manifest.get("splits", {})
    if not isinstance(splits, dict):
        raise ShardError(f"{path}: 'splits' must map split names to index lists; {MANIFEST_DAMAGED}")
    for name, ids in splits.items():
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ShardError(f"{path}: split {name!r} must be a list of network indices; {MANIFEST_DAMAGED}")
    try:
        splits = check_splits(splits, n)
    except ValueError as e:
        raise ShardError(f"{path}: {e} (the zoo has {n} networks); {MANIFEST_DAMAGED}") from e
    return spec, {k: torch.as_tensor(v, dtype=torch.long) for k, v in splits.items()}


class ShardCheck:
    """Checks the shards of one zoo against its manifest: see the module docstring for what is checked.

    ``spec``: the zoo's weight space (expected per-network shapes of the weight tensors);
    ``recorded``: the manifest's ``shard_sha256`` list (None for a zoo written before checksums).
    Shards must also agree with each other: the same tensor names, dtypes and per-network shapes as
    the first shard checked (records such as ``label`` are not in the spec)."""

    def __init__(self, kind: str, spec, recorded: Sequence[str | None] | None):
        self.kind, self.recorded = kind, recorded
        self.shapes = {p.name: tuple(p.shape) for p in spec.params}
        self.first: tuple[Path, dict[str, tuple]] | None = None

    def check(self, path: Path, k: int, start: int, stop: int, tensors: Mapping[str, torch.Tensor],
              meta: Mapping[str, str]) -> str:
        """Raise :class:`ShardError` naming ``path`` unless shard ``k`` holds networks ``[start, stop)``
        as the manifest describes them. Returns the checksum stored in the shard (None for a shard written
        before checksums existed; the caller hashes it only when it needs the value)."""
        from .shards import tensors_sha256

        where = f"networks [{start}, {stop})"
        want = {"kind": self.kind, "shard": str(k), "start": str(start), "stop": str(stop)}
        got = {key: meta[key] for key in want if key in meta}
        if got != {key: want[key] for key in got}:
            got = {**dict.fromkeys(want, "?"), **got}
            raise ShardError(f"{path}: holds shard {got['shard']} (networks [{got['start']}, {got['stop']}), kind "
                             f"{got['kind']}), expected shard {k} ({where}, kind {self.kind}): a shard was "
                             f"copied or renamed; {REBUILD}")
        index = tensors["index"]
        if index.shape != (stop - start,) or not torch.equal(index, torch.arange(start, stop)):
            raise ShardError(f"{path}: holds indices {index.reshape(-1)[:3].tolist()}..., expected {where}; "
                             f"a shard was copied or renamed; {REBUILD}")
        for name, shape in self.shapes.items():
            if name not in tensors:
                raise ShardError(f"{path}: shard lacks the weight tensor {name!r}; {REBUILD}")
            if tuple(tensors[name].shape[1:]) != shape:
                raise ShardError(f"{path}: {name!r} holds networks of shape {list(tensors[name].shape[1:])}, "
                                 f"the zoo's spec says {list(shape)}; {REBUILD}")
        layout = {name: (t.dtype, tuple(t.shape[1:])) for name, t in tensors.items()}
        if self.first is None:
            self.first = (path, layout)
        elif layout != self.first[1]:
            first, ref = self.first
            diff = sorted(set(layout) ^ set(ref)) or [n for n in sorted(layout) if layout[n] != ref[n]]
            raise ShardError(f"{path}: tensors differ from those of {first.name} ({diff[0]!r}: "
                             f"{_describe(layout.get(diff[0]))} here, {_describe(ref.get(diff[0]))} there); "
                             f"{REBUILD}")
        digest = meta.get(CHECKSUM_KEY)                  # read_shard verified it against the tensors
        recorded = self.recorded[k] if self.recorded is not None else None
        if recorded is not None and (digest or tensors_sha256(tensors)) != recorded:
            raise ShardError(f"{path}: the shard's tensors do not match the checksum recorded in the manifest "
                             f"(damaged, or replaced by another shard); {REBUILD}")
        return digest


@dataclass(frozen=True)
class ZooStatus:
    """What :func:`check_zoo` found: ``missing`` and ``damaged`` list ``(shard file, start, stop[,
    reason])``; ``summarized``: the manifest is complete (its checksums and summary are written)."""

    path: Path
    num_shards: int
    missing: tuple[tuple[str, int, int], ...]
    damaged: tuple[tuple[str, int, int, str], ...]
    summarized: bool

    @property
    def whole(self) -> bool:
        """Every shard present and intact, and the manifest complete: the zoo loads."""
        return not self.missing and not self.damaged and self.summarized


def check_zoo(path: str | Path) -> ZooStatus:
    """Check every shard of the zoo folder ``path`` against its manifest (presence, the shard's own
    sha256, the manifest's, ranges, shapes; see :class:`ShardCheck`). A missing or unreadable manifest
    is a :class:`ShardError`; problems with shards are reported in the result."""
    from .shards import read_json, read_shard

    path = Path(path)
    mpath = path / "manifest.json"
    manifest = read_json(mpath)
    spec, _ = check_manifest(mpath, manifest)
    n, size = manifest["num_items"], manifest["shard_size"]
    count = -(-n // size)
    names = manifest.get("shards")
    if not isinstance(names, list) or len(names) != count or not all(isinstance(x, str) for x in names):
        raise ShardError(f"{mpath}: 'shards' must list the {count} shard files; {MANIFEST_DAMAGED}")
    check = ShardCheck(manifest["kind"], spec, manifest.get("shard_sha256"))
    missing, damaged = [], []
    for k, name in enumerate(names):
        start, stop = k * size, min(n, (k + 1) * size)
        if not (path / name).is_file():
            missing.append((name, start, stop))
            continue
        try:
            tensors, meta = read_shard(path / name, expect=stop - start, keys=("index",))
            check.check(path / name, k, start, stop, tensors, meta)
        except ShardError as e:
            damaged.append((name, start, stop, str(e).removeprefix(f"{path / name}: ")))
    return ZooStatus(path, count, tuple(missing), tuple(damaged), manifest.get("complete") is True)


def _describe(layout) -> str:
    if layout is None:
        return "absent"
    dtype, shape = layout
    return f"{str(dtype).removeprefix('torch.')} [{', '.join(['n', *map(str, shape)])}]"
