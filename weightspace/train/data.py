"""A task's data in memory: the zoo's weights, one target per network, the splits and the
normalization statistics of the training split.

Splits: the zoo's own (INR recipes carry train / val / test); a zoo without a validation split gets
10% of its training split (fixed by the run's seed); a zoo without splits (model zoos) gets a
70 / 10 / 20 split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import UsageError
from ..space import WeightSpace
from ..spec import WeightSpaceSpec
from .config import TrainConfig
from .tasks import Task, recipe_hint

__all__ = ["TaskData", "load_task_data", "read_targets"]


@dataclass
class TaskData:
    spec: WeightSpaceSpec
    weights: WeightSpace
    targets: torch.Tensor
    splits: dict[str, torch.Tensor]
    out_features: int | None
    norm: object
    evaluator: Callable[[int], tuple] | None = None

    def part(self, split: str) -> tuple[WeightSpace, torch.Tensor]:
        idx = self.splits[split]
        return self.weights[idx], self.targets[idx]


def read_targets(path: str | Path, n: int, ndim: int | None = 1) -> torch.Tensor:
    """One target per network from a file: ``.safetensors`` (a single tensor, or one named
    ``targets``), a weights-only torch file of a tensor, or ``.npy``; its length must be ``n``.
    ``ndim``: the dimensions the tensor must have (1: ``[n]``, a label or a value per network);
    None: any ``[n, ...]`` (an image per network, for editing tasks)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError("targets file not found", str(path))
    try:
        if path.suffix == ".npy":
            import numpy as np
            t = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file
            d = load_file(str(path))
            t = d["targets"] if "targets" in d else (next(iter(d.values())) if len(d) == 1 else None)
            if t is None:
                raise UsageError(f"holds tensors {sorted(d)}; name the targets tensor 'targets'", str(path))
        else:
            t = torch.load(path, weights_only=True)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"cannot read targets ({type(e).__name__}: {e})", str(path)) from e
    if not torch.is_tensor(t) or (t.dim() != ndim if ndim is not None else t.dim() < 1):
        want = f"[{n}]" if ndim == 1 else f"[{n}, ...]" if ndim is None else f"[{n}, ...] ({ndim} dimensions)"
        raise UsageError(f"expected one tensor of shape {want}, got {getattr(t, 'shape', type(t).__name__)}", str(path))
    if t.shape[0] != n:
        raise UsageError(f"holds {t.shape[0]} targets but the zoo has {n} networks", str(path))
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise UsageError("targets contain NaN or Inf", str(path))
    return t


def load_task_data(config: TrainConfig, task: Task) -> TaskData:
    from ..data import load_zoo, normalization_stats

    zoo_path = Path(config.zoo)
    if not (zoo_path / "manifest.json").is_file():
        raise UsageError(f"no zoo at {zoo_path}; build it with: {recipe_hint(config.task, zoo_path)}", "--zoo")
    zoo = load_zoo(zoo_path)
    n = len(zoo)
    # invariant heads (a class, a value per network) read [N] targets; other tasks (editing) [N, ...]
    ndim = 1 if task.out_features in (0, 1) else None
    if config.targets is not None:
        targets = read_targets(config.targets, n, ndim)
    elif task.target in zoo.records:
        targets = zoo.records[task.target]
    else:
        raise UsageError(f"the zoo has no record {task.target!r} for task {task.name!r} (records: "
                         f"{', '.join(sorted(zoo.records))}); pass --targets FILE", str(zoo_path / "manifest.json"))
    out_features = task.out_features
    if out_features == 0:                                # classification: classes from the labels
        if targets.is_floating_point() and not torch.equal(targets, targets.round()):
            raise UsageError(f"task {task.name!r} needs integer class labels; the targets are fractional",
                             config.targets or str(zoo_path))
        if int(targets.min()) < 0:
            raise UsageError(f"class labels must be >= 0, found {int(targets.min())}", config.targets or str(zoo_path))
        targets = targets.long()
        out_features = int(targets.max()) + 1
    splits = _splits(zoo.splits, n, config.seed)
    if config.train_size is not None:
        splits["train"] = splits["train"][:config.train_size]
    norm = normalization_stats(zoo.weights[splits["train"]], mode="tensor")
    return TaskData(zoo.weights.spec, zoo.weights, targets, splits, out_features, norm, zoo_evaluator(zoo.manifest))


def zoo_evaluator(manifest: dict) -> Callable[[int], tuple] | None:
    """``evaluator(S) -> (module, inputs [S, in])`` for the networks of an INR zoo: a SIREN of the
    recipe's shape and S probe coordinates; None for other zoos.

    The probes are points of the pixel grid the INRs were fitted on (between grid points a w0 = 30
    SIREN is unconstrained and oscillates): all of them when ``S`` is at least the number of pixels,
    else S of them drawn by a fixed generator, so every run and every network sees the same probes."""
    recipe = manifest.get("recipe") or {}
    if manifest.get("kind") != "inr" or recipe.get("model") != "SIREN" or "grid" not in recipe:
        return None

    def evaluator(s: int):
        from ..data.inr import coordinate_grid
        from ..models import SIREN
        module = SIREN(int(recipe.get("in_features", 2)), tuple(recipe["hidden"]), int(recipe.get("out_features", 1)),
                       w0=float(recipe["w0"]))
        grid = coordinate_grid(*recipe["grid"])
        if s < grid.shape[0]:
            grid = grid[torch.randperm(grid.shape[0], generator=torch.Generator().manual_seed(0))[:s].sort().values]
        return module, grid
    return evaluator


def _splits(given: dict[str, torch.Tensor], n: int, seed: int) -> dict[str, torch.Tensor]:
    from ..data import split_indices

    if "train" in given and "test" in given:
        splits = {k: given[k] for k in ("train", "val", "test") if k in given}
        if "val" not in splits:
            tr = splits["train"]
            cut = split_indices(len(tr), {"val": 0.1, "train": -1}, seed=seed)
            splits = {"train": tr[cut["train"]], "val": tr[cut["val"]], "test": splits["test"]}
    else:
        splits = split_indices(n, {"train": 0.7, "val": 0.1, "test": -1}, seed=seed)
    for k, v in splits.items():
        if len(v) == 0:
            raise UsageError(f"the {k} split is empty ({n} networks); the zoo is too small for training", k)
    return splits
