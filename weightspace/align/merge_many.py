"""MergeMany (Git Re-Basin, Algorithm 3): bring N networks into one basin and average them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..inputs import as_state
from ..spec.spec import WeightSpaceSpec
from ._params import permute_entries
from .weight_matching import weight_matching

Perms = dict[str, torch.Tensor]


@dataclass
class MergeManyResult:
    """``merged``: the average of the aligned networks. ``aligned[i]`` = ``permute(models[i],
    perms[i])``. ``sweeps``: passes over the models until none moved."""

    merged: dict[str, torch.Tensor]
    aligned: list[dict[str, torch.Tensor]]
    perms: list[Perms]
    sweeps: int


def _mean(states: Sequence[dict[str, torch.Tensor]], spec: WeightSpaceSpec) -> dict[str, torch.Tensor]:
    out = dict(states[0])
    for n in spec.weight_names:
        if states[0][n].is_floating_point():
            out[n] = sum(s[n] for s in states) / len(states)
    return out


def merge_many(spec: WeightSpaceSpec, models: Sequence[Any], *, max_iter: int = 100, seed: int = 0,
               progress: bool = False, **matching) -> MergeManyResult:
    """Align every network to the average of the others, in random order (seeded), until a sweep
    changes no permutation; return their average. No network is privileged: the common basin is
    found jointly (Ainsworth et al., Algorithm 3, with weight matching as the inner step).

    ``models``: state dicts (or one-network WeightSpaces) sharing ``spec`` (an error names the
    first differing parameter). ``matching``: keyword arguments of :func:`weight_matching`.
    """
    states = [as_state(m, spec, f"model #{i}") for i, m in enumerate(models)]
    if len(states) < 2:
        raise ValueError("merge_many needs at least two networks")
    perms: list[Perms] = [{g.name: torch.arange(g.size) for g in spec.groups} for _ in states]
    aligned = [dict(s) for s in states]
    gen = torch.Generator().manual_seed(seed)
    sweeps = 0
    for sweeps in tqdm(range(1, max_iter + 1), desc="MergeMany", disable=not progress, leave=False):
        moved = False
        for i in torch.randperm(len(states), generator=gen).tolist():
            others = _mean([aligned[j] for j in range(len(states)) if j != i], spec)
            p = weight_matching(spec, others, states[i], init=perms[i] if sweeps > 1 else None, seed=seed + sweeps,
                                **matching)
            if any(not torch.equal(p[g], perms[i][g]) for g in p):
                moved = True
                perms[i] = p
                new: dict[str, torch.Tensor] = {}
                permute_entries(states[i], spec.names, spec, p, new)
                aligned[i] = new
        if not moved:
            break
    return MergeManyResult(_mean(aligned, spec), aligned, perms, sweeps)
