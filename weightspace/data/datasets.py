"""torch Datasets of networks: WeightSpace samples with targets, collation into WeightSpace batches,
normalization statistics per parameter, deterministic splits, and loading zoo folders."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from ..space import WeightSpace
from ..spec import WeightSpaceSpec
from .shards import ShardError, read_json


class WeightDataset(torch.utils.data.Dataset):
    """Networks of one spec with one target each: item ``i`` is ``(WeightSpace of 1 network, target)``.

    ``weights``: a WeightSpace of all networks (``[N, ...]`` per parameter); ``targets [N, ...]``: the
    class of an INR's image, the test accuracy of a zoo model, ...; ``indices``: the subset this
    dataset exposes (default all; each in ``[0, N)``, checked here so a bad index fails now, not when
    its sample is fetched); ``normalize``: :class:`NormStats` applied to each sample;
    ``transform``: a function ``WeightSpace -> WeightSpace`` applied after normalization (e.g. a
    random permutation for augmentation). Batch it with :func:`collate_weights` (a DataLoader fetches
    whole batches at once through ``__getitems__``).
    """

    def __init__(self, weights: WeightSpace, targets: torch.Tensor, indices: Sequence[int] | torch.Tensor | None = None,
                 normalize: "NormStats | None" = None, transform: Callable[[WeightSpace], WeightSpace] | None = None):
        targets = torch.as_tensor(targets)
        if targets.shape[0] != weights.batch_size:
            raise ValueError(f"{targets.shape[0]} targets for {weights.batch_size} networks")
        self.weights, self.targets = weights, targets
        self.indices = (torch.arange(weights.batch_size) if indices is None
                        else torch.as_tensor(indices, dtype=torch.long).reshape(-1))
        bad = self.indices[(self.indices < 0) | (self.indices >= weights.batch_size)]
        if len(bad):   # refused here, not when the sample is fetched
            raise IndexError(f"indices {bad[:5].tolist()} out of range for {weights.batch_size} networks")
        self.normalize, self.transform = normalize, transform

    @property
    def spec(self) -> WeightSpaceSpec:
        return self.weights.spec

    def __len__(self) -> int:
        return len(self.indices)

    def _get(self, rows: torch.Tensor) -> tuple[WeightSpace, torch.Tensor]:
        ids = self.indices[rows]
        ws = self.weights[ids]
        if self.normalize is not None:
            ws = self.normalize.apply(ws)
        if self.transform is not None:
            ws = self.transform(ws)
        return ws, self.targets[ids]

    def __getitem__(self, i: int) -> tuple[WeightSpace, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} networks")
        ws, t = self._get(torch.tensor([i % len(self)]))
        return ws, t[0]

    def __getitems__(self, rows: Sequence[int]) -> "Batch":
        """A whole batch at once (used by DataLoader): one gather per parameter instead of per item."""
        ws, t = self._get(torch.as_tensor(list(rows), dtype=torch.long))
        return Batch(ws, t)

    def loader(self, batch_size: int = 64, shuffle: bool = False, seed: int | None = None, graph: bool = False,
               **kwargs) -> torch.utils.data.DataLoader:
        """A DataLoader of ``(WeightSpace [B], targets [B])`` batches; ``seed`` fixes the shuffle.

        ``graph=True``: batches are instead torch_geometric ``Batch`` es of the networks' parameter
        graphs (:func:`weightspace.to_graph`, built in one pass per batch) with the targets in ``.y``."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=g,
                                           collate_fn=collate_graphs if graph else collate_weights, **kwargs)


@dataclass
class Batch:
    """A batch of networks and targets (what :func:`collate_weights` returns); unpacks as a pair."""

    weights: WeightSpace
    targets: torch.Tensor

    def __iter__(self):
        return iter((self.weights, self.targets))

    def __len__(self) -> int:
        return self.weights.batch_size

    def to(self, *args, **kwargs) -> "Batch":
        return Batch(self.weights.to(*args, **kwargs), self.targets.to(*args, **kwargs))

    def graphs(self):
        """The batch's parameter graphs as one torch_geometric ``Batch`` (``B`` graphs), targets in ``.y [B, ...]``."""
        from ..graph import to_graph
        graphs = to_graph(self.weights)
        graphs.y = self.targets
        return graphs


def collate_weights(samples) -> Batch:
    """``[(WeightSpace [1], target), ...]`` (or an already gathered :class:`Batch`) -> ``Batch``
    (``WeightSpace [B]``, ``targets [B, ...]``)."""
    if isinstance(samples, Batch):
        return samples
    samples = list(samples)
    if not samples:
        raise ValueError("cannot collate an empty batch")
    spaces, targets = zip(*samples)
    return Batch(WeightSpace.cat(spaces), torch.stack([torch.as_tensor(t) for t in targets]))


def collate_graphs(samples):
    """Like :func:`collate_weights`, as a torch_geometric ``Batch`` of parameter graphs with ``.y``."""
    return collate_weights(samples).graphs()


@dataclass
class NormStats:
    """Mean and standard deviation per parameter tensor (``mode="tensor"``: one scalar each, which keeps
    every permutation symmetry) or per entry (``mode="element"``: DWSNets' per-position statistics,
    which do not commute with permutations). ``apply``: ``(w - mean) / std``; ``invert`` undoes it."""

    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]
    mode: str = "tensor"

    def apply(self, ws: WeightSpace) -> WeightSpace:
        t = dict(ws.tensors)
        for name in self.mean:
            t[name] = (t[name] - self.mean[name].to(t[name])) / self.std[name].to(t[name])
        return WeightSpace(ws.spec, t)

    def invert(self, ws: WeightSpace) -> WeightSpace:
        t = dict(ws.tensors)
        for name in self.mean:
            t[name] = t[name] * self.std[name].to(t[name]) + self.mean[name].to(t[name])
        return WeightSpace(ws.spec, t)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors file (``mean/<name>``, ``std/<name>``)."""
        return {**{f"mean/{k}": v for k, v in self.mean.items()}, **{f"std/{k}": v for k, v in self.std.items()}}

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], mode: str = "tensor") -> "NormStats":
        return cls({k[5:]: v for k, v in sd.items() if k.startswith("mean/")},
                   {k[4:]: v for k, v in sd.items() if k.startswith("std/")}, mode)


def normalization_stats(weights: WeightSpace, mode: str = "tensor", min_std: float = 1e-8) -> NormStats:
    """:class:`NormStats` of the learned-on entries of ``weights`` (compute them on the training split)."""
    if mode not in ("tensor", "element"):
        raise ValueError(f"mode must be 'tensor' or 'element', got {mode!r}")
    mean, std = {}, {}
    for name in weights.spec.weight_names:
        t = weights.tensors[name].double()
        if mode == "tensor":
            m, s = t.mean(), t.std(unbiased=False)
        else:
            m, s = t.mean(0), t.std(0, unbiased=False)
        mean[name], std[name] = m.float(), s.clamp_min(min_std).float()
    return NormStats(mean, std, mode)


def split_indices(n: int, sizes: Mapping[str, int | float], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random splits of ``range(n)``: ``sizes`` maps split names to counts or fractions
    (a fraction is of ``n``; one split may be ``-1`` for "the rest"). Each split's indices are sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    counts = {k: (round(v * n) if isinstance(v, float) and v != -1 else int(v)) for k, v in sizes.items()}
    rest = [k for k, v in counts.items() if v == -1]
    if len(rest) > 1:
        raise ValueError("at most one split can take the rest (-1)")
    fixed = sum(v for v in counts.values() if v != -1)
    if fixed > n or any(v < -1 for v in counts.values()):
        raise ValueError(f"split sizes {dict(sizes)} do not fit {n} items")
    if rest:
        counts[rest[0]] = n - fixed
    out, start = {}, 0
    for k, c in counts.items():
        out[k] = perm[start:start + c].sort().values
        start += c
    return out


@dataclass
class Zoo:
    """A zoo folder loaded into memory: every network (``weights``), per-network ``records``
    (``label``, ``psnr``, ``test_accuracy``, ...), ``splits`` (index tensors) and the ``manifest``."""

    path: Path
    manifest: dict
    weights: WeightSpace
    records: dict[str, torch.Tensor]
    splits: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.weights.batch_size

    def dataset(self, split: str | None = None, target: str | None = None, normalize: NormStats | None = None,
                transform: Callable | None = None) -> WeightDataset:
        """A :class:`WeightDataset` of one split (default: all) with ``records[target]`` as targets
        (default: ``label`` for INR zoos, ``test_accuracy`` for model zoos)."""
        target = target or ("label" if "label" in self.records and self.manifest.get("kind") == "inr"
                            else "test_accuracy" if "test_accuracy" in self.records else "label")
        if target not in self.records:
            raise KeyError(f"{self.path}: no record {target!r}; records are {sorted(self.records)}")
        if split is not None and split not in self.splits:
            raise KeyError(f"{self.path}: no split {split!r}; splits are {sorted(self.splits)}")
        idx = None if split is None else self.splits[split]
        return WeightDataset(self.weights, self.records[target], idx, normalize, transform)

    def normalization_stats(self, split: str = "train", mode: str = "tensor") -> NormStats:
        return normalization_stats(self.weights[self.splits[split]] if split in self.splits else self.weights, mode)


def load_zoo(path: str | Path) -> Zoo:
    """Load a zoo folder written by ``weightspace fit-inrs`` / ``make-zoo`` (see :mod:`.zoo`). The
    manifest is checked first (fields, spec, splits in range: :func:`.integrity.check_manifest`), then
    every shard (checksums, indices, shapes: :class:`.integrity.ShardCheck`, the same checks a resumed
    run makes); anything missing, damaged or inconsistent raises :class:`ShardError` naming the file."""
    from .zoo import ZooRun

    path = Path(path)
    manifest = read_json(path / "manifest.json")
    run = ZooRun.existing(path, manifest)
    if not manifest.get("complete"):
        raise ShardError(f"{path / 'manifest.json'}: the zoo is incomplete (a run was stopped); run the same "
                         "command again to finish it")
    tensors = run.load_all(keys=tuple(run.spec.names))
    weights = WeightSpace(run.spec, {n: tensors.pop(n) for n in run.spec.names})
    return Zoo(path, manifest, weights, tensors, run.splits)
