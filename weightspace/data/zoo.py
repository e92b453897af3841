"""Sharded, resumable zoo generation: a manifest (JSON) plus one safetensors file per shard.

On-disk layout of a zoo folder::

    manifest.json            format, kind, source, recipe, seed, splits, spec, shard list, and, once
                             complete, per-network metrics (an INR zoo: PSNR and steps)
    shards/<kind>-00000.safetensors
    shards/<kind>-00001.safetensors ...

Shard ``k`` holds networks ``[k * shard_size, (k + 1) * shard_size)``: their state-dict tensors
stacked along a first axis (``layers.0.weight [n, 32, 2]``, ...) and per-network records (``index``,
``label``, ``psnr``, ...). A shard is a pure function of the recipe, the seed and its indices, and is
written atomically (temp file, then rename). Each shard's checksum is stored in the shard and in the
manifest (``shard_sha256``), and every reader checks shards the same way (:mod:`.integrity`). A run
that is killed leaves only whole shards; running the same command again checks that the manifest
describes the same zoo, checks the shards on disk, and fits only the missing ones, ending with exactly
the files an uninterrupted run writes.

Several writers split a zoo by :class:`~.shards.ShardPart` (``part`` argument, or a
:func:`~.shards.writing_part` block): each computes and publishes only its own shards and leaves the
manifest alone, apart from creating it (every writer would write the same one). The writer that
finds every shard on disk at its end checks them all and writes the complete manifest, checksums and
summary included; two that finish together write the same bytes. No locks, so any shared file system
works.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from .integrity import FORMAT, VERSION, ShardCheck, check_identity, check_manifest, check_splits
from .shards import (ShardPart, ZooIncomplete, _write_shard, current_part, read_json, read_shard, tensors_sha256,
                     write_json)

__all__ = ["FORMAT", "VERSION", "ZooRun", "check_splits", "fingerprint", "generate_inr_zoo"]


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 of tensors' bytes (to recognize the data a zoo was made from)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _json_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class ZooRun:
    """The manifest and shards of one zoo folder; knows which shards are missing.

    ``identity``: everything that determines the shards' contents (kind, source fingerprint, recipe,
    seed, sizes, splits). Opening a folder whose manifest has a different identity is an error that
    names the first differing field, so a resumed run cannot mix two zoos. ``extra`` must hold the
    zoo's ``spec`` (shards are checked against it).
    """

    def __init__(self, out: str | Path, kind: str, identity: Mapping, num_items: int, shard_size: int,
                 extra: Mapping | None = None, part: ShardPart | None = None):
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        self.out = Path(out)
        self.part = part if part is not None else current_part()
        self.kind, self.num_items, self.shard_size = kind, int(num_items), int(shard_size)
        self.identity = {"format": FORMAT, "version": VERSION, "kind": kind, "num_items": self.num_items,
                         "shard_size": self.shard_size, **json.loads(json.dumps(identity))}
        self.manifest_path = self.out / "manifest.json"
        if self.manifest_path.exists():
            self.manifest = check_identity(self.manifest_path, read_json(self.manifest_path), self.identity)
            mine = {Path(self.shard_name(k)).name for k in self.owned()}
            for stale in (self.out / "shards").glob(".*.tmp"):   # half-written files of a killed run
                if stale.name.lstrip(".").split(".safetensors.")[0] + ".safetensors" in mine:
                    stale.unlink(missing_ok=True)        # (another part's temp files are its own)
        else:
            self.manifest = {**self.identity, **json.loads(json.dumps(extra or {})), "complete": False,
                             "shards": [self.shard_name(k) for k in range(self.num_shards)],
                             "shard_sha256": [None] * self.num_shards}
            write_json(self.manifest_path, self.manifest)
        self.writable, self._checked, self._spec_splits = True, {}, None

    @classmethod
    def existing(cls, out: str | Path, manifest: Mapping) -> "ZooRun":
        """A run object for a folder whose manifest is already read (for loading, not generating); the
        manifest is checked (:func:`.integrity.check_manifest`)."""
        run = cls.__new__(cls)
        run.manifest_path = Path(out) / "manifest.json"
        run._spec_splits = check_manifest(run.manifest_path, manifest)
        run.out, run.kind = Path(out), manifest["kind"]
        run.num_items, run.shard_size = int(manifest["num_items"]), int(manifest["shard_size"])
        run.identity, run.manifest = {}, dict(manifest)
        run.writable, run._checked, run.part = False, {}, ShardPart()
        return run

    def _checked_manifest(self):
        if self._spec_splits is None:
            self._spec_splits = check_manifest(self.manifest_path, self.manifest)
        return self._spec_splits

    @property
    def spec(self):
        """The zoo's weight space (from the checked manifest)."""
        return self._checked_manifest()[0]

    @property
    def splits(self) -> dict[str, torch.Tensor]:
        """The manifest's splits (checked: in range, disjoint) as index tensors."""
        return self._checked_manifest()[1]

    @property
    def num_shards(self) -> int:
        return -(-self.num_items // self.shard_size)

    def shard_name(self, k: int) -> str:
        return f"shards/{self.kind}-{k:05d}.safetensors"

    def shard_path(self, k: int) -> Path:
        return self.out / self.shard_name(k)

    def shard_range(self, k: int) -> tuple[int, int]:
        return k * self.shard_size, min(self.num_items, (k + 1) * self.shard_size)

    def _checker(self) -> ShardCheck:
        return ShardCheck(self.kind, self.spec, self.manifest.get("shard_sha256"))

    def _read(self, k: int, check: ShardCheck, keys: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], str | None]:
        """Shard ``k``'s tensors after every check (:meth:`.integrity.ShardCheck.check`) and its checksum."""
        start, stop = self.shard_range(k)
        path = self.shard_path(k)
        tensors, meta = read_shard(path, expect=stop - start, keys=("index", *keys))
        return tensors, check.check(path, k, start, stop, tensors, meta)

    def owned(self) -> list[int]:
        """The shards this writer's part computes (all of them for the part ``0/1``)."""
        return [k for k in range(self.num_shards) if self.part.owns(k)]

    def missing(self) -> list[int]:
        """Shards of any part not on disk yet (not read: see :meth:`pending` for the checks)."""
        return [k for k in range(self.num_shards) if not self.shard_path(k).exists()]

    def pending(self) -> list[int]:
        """This part's shards not yet on disk (in order). Existing shards are checked as :func:`load_zoo`
        checks them: a damaged, misplaced or misshapen one is an error naming it (a killed run never
        leaves one, so it is real damage). A shard from before checksums existed that passes gets its
        checksum recorded in the manifest (by a single writer; parts leave that to the last one). A shard
        already checked by this run and unchanged since (same size, mtime and inode) is not read again."""
        todo, check, adopted = [], None, False
        for k in self.owned():
            p = self.shard_path(k)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                todo.append(k)
                continue
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            if self._checked.get(k) == stamp:
                continue
            check = check or self._checker()
            tensors, digest = self._read(k, check)
            recorded = self.manifest.get("shard_sha256") or [None] * self.num_shards   # length checked
            if self.writable and self.part.count == 1 and recorded[k] is None:
                self._record(k, digest or tensors_sha256(tensors))
                adopted = True
            self._checked[k] = stamp
        if adopted:
            write_json(self.manifest_path, self.manifest)
        return todo

    def _record(self, k: int, digest: str) -> None:
        sums = self.manifest.get("shard_sha256")
        if not isinstance(sums, list) or len(sums) != self.num_shards:
            sums = self.manifest["shard_sha256"] = [None] * self.num_shards
        sums[k] = digest

    def write(self, k: int, tensors: Mapping[str, torch.Tensor]) -> Path:
        """Write shard ``k`` (atomically, never over an existing one), then record its checksum in the
        manifest (a single writer; parts leave that to the one that finishes the zoo). A run killed
        between the two leaves a shard whose own checksum still verifies it; the next run records it."""
        if not self.part.owns(k):
            raise ValueError(f"shard {k} belongs to another part than {self.part}")
        start, stop = self.shard_range(k)
        path, digest = _write_shard(self.shard_path(k), tensors,
                                    {"kind": self.kind, "shard": k, "start": start, "stop": stop}, exclusive=True)
        if self.part.count == 1:
            self._record(k, digest)
            write_json(self.manifest_path, self.manifest)
        st = os.stat(path)
        self._checked[k] = (st.st_size, st.st_mtime_ns, st.st_ino)
        return path

    def load_all(self, keys: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """Every shard, checked (see :meth:`pending`), concatenated: ``{name: [num_items, ...]}``; their
        checksums are recorded for :meth:`finish`. :class:`~.shards.ZooIncomplete` names the shards not
        written yet (by other parts)."""
        gone = [] if self.manifest.get("complete") else self.missing()   # (a complete zoo's lost shard: read error)
        if gone:
            names = ", ".join(self.shard_name(k) for k in gone[:3]) + (", ..." if len(gone) > 3 else "")
            raise ZooIncomplete(f"{self.out}: {len(gone)} of {self.num_shards} shards are not written yet ({names}); "
                                "the parts writing them have not finished (weightspace zoo-check lists them)", gone)
        check, parts = self._checker(), []
        for k in range(self.num_shards):
            tensors, digest = self._read(k, check, keys)
            if self.writable:
                self._record(k, digest or tensors_sha256(tensors))
            parts.append(tensors)
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    def finish(self, summary: Mapping) -> dict:
        self.manifest.update(json.loads(json.dumps(summary)))
        self.manifest["complete"] = True
        write_json(self.manifest_path, self.manifest)
        return self.manifest


def generate_inr_zoo(out: str | Path, images: torch.Tensor, labels: torch.Tensor, *,
                     splits: Mapping[str, Sequence[int]] | None = None, source: Mapping | None = None,
                     shard_size: int = 1000, workers: int = 1, threads: int = 1, progress: bool = True,
                     max_shards: int | None = None, on_shard: Callable[[int, Path], None] | None = None,
                     part: ShardPart | None = None, **fit_kwargs) -> dict:
    """Fit one INR per image into a sharded zoo under ``out``; resumes a killed run.

    ``images [N, (C,) H, W]`` in [0, 1], ``labels [N]``; ``splits``: ``{name: [indices]}`` recorded in
    the manifest (default: everything in ``"train"``); ``source``: a description of the images
    (recorded; e.g. ``{"name": "mnist", "split": "all"}``); ``fit_kwargs``: :func:`fit_inrs`
    arguments (``steps``, ``hidden``, ``w0``, ``lr``, ``seed``, ``target_psnr``, ``output_offset``,
    ``first_layer_init``, ``batch_size``). ``workers`` processes fit whole shards in parallel, each
    with ``threads`` threads. ``max_shards``: write at most this many shards in this run, then return
    (an incomplete manifest; run again to continue). ``on_shard(k, path)`` is called after each shard
    is written. ``part``: write only this part's shards (default: all, or the enclosing
    :func:`~.shards.writing_part`); the part that finds every shard written completes the manifest.
    Returns the manifest (a dict; ``complete`` False while shards are missing).
    """
    from .inr import _as_images, _fit_pool, _with_threads, check_fit_args, default_batch_size, siren_spec

    x = _as_images(images)
    labels = torch.as_tensor(labels, dtype=torch.long)
    N, C, H, W = x.shape
    if labels.shape != (N,):
        raise ValueError(f"{len(labels)} labels for {N} images")
    kw = dict(steps=1000, hidden=(32, 32), w0=30.0, lr=5e-4, seed=0, target_psnr=40.0, output_offset=0.5,
              first_layer_init="siren", batch_size=None, betas=(0.9, 0.999), eps=1e-8)
    unknown = set(fit_kwargs) - set(kw)
    if unknown:
        raise TypeError(f"unknown fit arguments {sorted(unknown)}")
    kw.update(fit_kwargs)
    check_fit_args(**kw)                                # before anything is written (lr=nan, w0=0, ...)
    kw["hidden"] = tuple(int(h) for h in kw["hidden"])
    kw["betas"] = tuple(float(b) for b in kw["betas"])
    if kw["batch_size"] is None:
        kw["batch_size"] = default_batch_size(H * W * C)
    splits = check_splits(splits if splits is not None else {"train": range(N)}, N)
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items() if k != "batch_size"}
    recipe.update(model="SIREN", in_features=2, out_features=C, grid=[H, W],
                  coordinates="x=linspace(-1,1,W) along columns (input 0), y=linspace(-1,1,H) along rows (input 1)")
    identity = {"source": {**(source or {}), "num_images": N, "image_shape": [C, H, W],
                           "sha256": fingerprint(x, labels)},
                "recipe": recipe, "seed": int(kw["seed"]), "splits_sha256": _json_hash(splits)}
    run = ZooRun(out, "inr", identity, N, shard_size,
                 extra={"splits": splits, "spec": siren_spec(kw["hidden"], C).to_dict(),
                        "keys": {"weights": [f"layers.{i}.{t}" for i in range(len(kw["hidden"]) + 1)
                                             for t in ("weight", "bias")],
                                 "records": ["index", "label", "psnr", "steps"]}}, part=part)
    pending = run.pending()
    todo = pending if max_shards is None else pending[:max(0, int(max_shards))]
    size = [run.shard_range(k)[1] - run.shard_range(k)[0] for k in range(run.num_shards)]
    mine = sum(size[k] for k in run.owned())
    bar = None
    t0 = time.perf_counter()
    tally = [0, 0.0]
    if progress and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=mine, initial=mine - sum(size[k] for k in pending), unit="INR", dynamic_ncols=True,
                   desc=f"INR zoo {run.out.name}" + (f" part {run.part}" if run.part.count > 1 else ""))

    def report(ids, psnr):
        tally[0] += len(ids)
        tally[1] += float(psnr.sum())
        if bar is not None:
            bar.update(len(ids))
            bar.set_postfix_str(f"{tally[0] / (time.perf_counter() - t0):.1f} INR/s, "
                                f"mean PSNR {tally[1] / tally[0]:.1f} dB")

    def save(k: int, result) -> None:
        from .siren_batch import SirenLayout
        flat, psnr, steps = result
        start, stop = run.shard_range(k)
        tensors = SirenLayout(kw["hidden"], C).state_tensors(flat)
        tensors.update(index=torch.arange(start, stop), label=labels[start:stop].clone(), psnr=psnr, steps=steps)
        path = run.write(k, tensors)
        if on_shard is not None:
            on_shard(k, path)

    try:
        if workers <= 1:
            for k in todo:
                start, stop = run.shard_range(k)
                save(k, _with_threads(threads, _fit_pool, x[start:stop], torch.arange(start, stop), kw, report))
        else:
            from concurrent.futures import FIRST_COMPLETED, wait

            from .parallel import FitWorkers
            with FitWorkers(workers, threads) as pool:
                queue = list(todo)
                inflight = {}
                while queue or inflight:
                    while queue and len(inflight) < workers:
                        k = queue.pop(0)
                        start, stop = run.shard_range(k)
                        inflight[pool.submit(x[start:stop], torch.arange(start, stop), kw)] = k
                    done, _ = wait(list(inflight), timeout=0.2, return_when=FIRST_COMPLETED)
                    pool.drain(report)
                    for f in done:
                        save(inflight.pop(f), f.result())
    finally:
        if bar is not None:
            bar.close()
    if run.pending() or run.missing():
        return run.manifest
    records = run.load_all(keys=("psnr", "steps", "label"))
    psnr = records["psnr"]
    summary = {"psnr": [round(float(p), 4) for p in psnr], "steps": records["steps"].tolist(),
               "summary": {"mean_psnr": float(psnr.mean()), "min_psnr": float(psnr.min()),
                           "median_psnr": float(psnr.median()),
                           "fraction_at_target": None if kw["target_psnr"] is None else
                           float((psnr >= kw["target_psnr"]).float().mean()),
                           "mean_steps": float(records["steps"].float().mean())}}
    return run.finish(summary)
