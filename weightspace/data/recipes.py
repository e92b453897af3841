"""Recipes for the standard INR zoos: which images, which splits, which fitting hyperparameters.

``mnist-inr`` / ``fashion-mnist-inr`` reproduce the published datasets of DWSNets (and Neural Graphs):
one INR per image of the 70,000 (60,000 train + 10,000 test) with the published split sizes,
55,000 train / 5,000 validation (drawn at random from the training images) / 10,000 test.
``digits-inr`` is the small default built from scikit-learn's bundled digits (no files needed).
The scripts in ``datasets/`` run these recipes; ``datasets/README.md`` documents them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UsageError
from . import _args
from .datasets import split_indices

# The published MNIST-INR fitting recipe (see weightspace.data.inr): SIREN 2-32-32-1, w0 = 30,
# Adam lr 5e-4, up to 1,000 steps, stop at 40 dB, DWSNets' output offset 0.5, SIREN-paper init.
INR_FIT = dict(steps=1000, hidden=(32, 32), w0=30.0, lr=5e-4, target_psnr=40.0, output_offset=0.5,
               first_layer_init="siren")


@dataclass(frozen=True)
class INRRecipe:
    name: str
    source: str
    split: str                       # which images of the source ("all" = train then test)
    val_size: int | float            # validation images drawn from the source's training images
    fit: dict = field(default_factory=lambda: dict(INR_FIT))
    description: str = ""


RECIPES = {
    "mnist-inr": INRRecipe("mnist-inr", "mnist", "all", 5000,
                           description="DWSNets / Neural Graphs MNIST-INR: 70,000 INRs, 55k/5k/10k"),
    "fashion-mnist-inr": INRRecipe("fashion-mnist-inr", "fashion-mnist", "all", 5000,
                                   description="DWSNets / Neural Graphs Fashion-MNIST-INR: 70,000 INRs, 55k/5k/10k"),
    "digits-inr": INRRecipe("digits-inr", "digits", "all", 0.1,
                            description="scikit-learn digits (8x8): 1,797 INRs, 70/10/20% train/val/test"),
}

_SOURCE_RECIPE = {"digits": "digits-inr", "mnist": "mnist-inr", "fashion-mnist": "fashion-mnist-inr"}


def recipe_for(source: str) -> INRRecipe:
    """The standard recipe of an image source (``digits``, ``mnist``, ``fashion-mnist``)."""
    key = source.lower().replace("_", "-")
    key = "fashion-mnist" if key == "fashion" else key
    if key in RECIPES:
        return RECIPES[key]
    if key not in _SOURCE_RECIPE:
        raise UsageError(f"no INR recipe for source {source!r}; choose one of {', '.join(_SOURCE_RECIPE)} "
                         f"(recipes: {', '.join(sorted(RECIPES))})", "source")
    return RECIPES[_SOURCE_RECIPE[key]]


def _recipe(recipe: INRRecipe | str) -> INRRecipe:
    if isinstance(recipe, INRRecipe):
        return recipe
    if recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}; choose one of {', '.join(sorted(RECIPES))}", "recipe")
    return RECIPES[recipe]


def prepare(recipe: INRRecipe | str, root: str | Path | None = None, seed: int = 0, limit: int | None = None):
    """``(images, labels, splits, source)`` of a recipe. ``limit`` keeps the first ``limit`` images of
    each of the source's parts (train and test) for quick subsets; splits shrink accordingly."""
    from .images import load_images, load_train_test

    r = _recipe(recipe)
    limit = _args.count("limit", limit, optional=True)
    if r.source == "digits":
        images, labels = load_images("digits")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        n = len(images)
        splits = split_indices(n, {"train": -1, "val": r.val_size, "test": 0.2}, seed=seed)
        source = {"name": "digits", "split": "all"}
    else:
        (tr_x, tr_y), (te_x, te_y) = load_train_test(r.source, root)
        if limit is not None:
            tr_x, tr_y, te_x, te_y = tr_x[:limit], tr_y[:limit], te_x[:limit], te_y[:limit]
        n_tr = len(tr_x)
        images, labels = torch.cat([tr_x, te_x]), torch.cat([tr_y, te_y])
        val = r.val_size if isinstance(r.val_size, int) else round(r.val_size * n_tr)
        val = min(val, n_tr // 10) if limit is not None else val
        part = split_indices(n_tr, {"train": -1, "val": val}, seed=seed)
        splits = {"train": part["train"], "val": part["val"], "test": torch.arange(n_tr, len(images))}
        source = {"name": r.source, "split": "all", "order": "train images then test images",
                  "limit": limit}
    return images, labels, {k: v.tolist() for k, v in splits.items()}, {**source, "recipe": r.name}


def make_inr_zoo(recipe: INRRecipe | str, out: str | Path, root: str | Path | None = None, seed: int = 0,
                 limit: int | None = None, shard_size: int = 1000, workers: int = 2, threads: int = 1,
                 progress: bool = True, max_shards: int | None = None, **overrides) -> dict:
    """Build (or resume) a recipe's zoo under ``out``; returns the manifest. Every argument is checked
    (:func:`~weightspace.data.inr.check_fit_args` and counts >= 1) before the images are loaded or
    anything is written."""
    from .inr import check_fit_args
    from .zoo import generate_inr_zoo

    r = _recipe(recipe)
    fit = {**r.fit, **{k: v for k, v in overrides.items() if v is not None}}
    check_fit_args(seed=seed, **fit)
    _args.count("limit", limit, optional=True)
    _args.count("shard_size", shard_size)
    _args.count("workers", workers)
    _args.count("threads", threads, low=0, optional=True)
    _args.count("max_shards", max_shards, optional=True)
    _args.out_folder("out", out)
    images, labels, splits, source = prepare(r, root, seed, limit)
    return generate_inr_zoo(out, images, labels, splits=splits, source=source, shard_size=shard_size,
                            workers=workers, threads=threads, progress=progress, max_shards=max_shards,
                            seed=seed, **fit)
