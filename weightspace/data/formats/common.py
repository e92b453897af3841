"""Shared pieces of the published-format readers: safe torch loading, SIREN key mapping."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from ...space import WeightSpace
from ..idx import DataFormatError


def load_torch_file(path: Path) -> object:
    """``torch.load(path, weights_only=True)`` (data only, never code); errors name the file."""
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip archives, bad pickles, code refused by weights_only
        raise DataFormatError(f"{path}: cannot be loaded as a weights-only torch file (corrupt, truncated, or it "
                              f"contains code): {type(e).__name__}: {e}") from e


def siren_layers(state: Mapping, path: Path) -> dict[str, torch.Tensor]:
    """A SIREN's ``(weight, bias)`` tensors in state-dict order -> ``layers.{i}.weight/bias``.

    Keys are read in order, weights and biases alternating (``seq.0.weight, seq.0.bias, ...`` for
    DWSNets; ``net.0.linear.weight, ...`` for NFN); entries that are not tensors (a stored label)
    are skipped."""
    items = [(k, v) for k, v in state.items() if isinstance(v, torch.Tensor) and ("weight" in k or "bias" in k)]
    if not items or len(items) % 2:
        raise DataFormatError(f"{path}: expected alternating weight/bias tensors, found keys {list(state)[:8]}")
    out = {}
    for i in range(len(items) // 2):
        (kw, w), (kb, b) = items[2 * i], items[2 * i + 1]
        if "weight" not in kw or "bias" not in kb or w.dim() != 2 or b.shape != (w.shape[0],):
            raise DataFormatError(f"{path}: layer {i} is not a (weight [out, in], bias [out]) pair: "
                                  f"{kw} {tuple(w.shape)}, {kb} {tuple(b.shape)}")
        if i and w.shape[1] != out[f"layers.{i - 1}.weight"].shape[0]:
            raise DataFormatError(f"{path}: layer {i} reads {w.shape[1]} features, layer {i - 1} writes "
                                  f"{out[f'layers.{i - 1}.weight'].shape[0]}")
        out[f"layers.{i}.weight"], out[f"layers.{i}.bias"] = w.float(), b.float()
    return out


def stack_sirens(states: Sequence[dict[str, torch.Tensor]], paths: Sequence[Path]) -> WeightSpace:
    """SIREN state dicts (``layers.{i}.*``, one architecture) -> a WeightSpace; a file whose shapes
    differ from the first one's is named in the error."""
    from ..inr import siren_spec

    if not states:
        raise DataFormatError("no networks found")
    first = states[0]
    for sd, p in zip(states, paths):
        if sd.keys() != first.keys() or any(sd[k].shape != first[k].shape for k in first):
            raise DataFormatError(f"{p}: architecture {[tuple(v.shape) for v in sd.values()]} differs from "
                                  f"{paths[0]}'s {[tuple(v.shape) for v in first.values()]}")
    n_layers = len(first) // 2
    hidden = tuple(first[f"layers.{i}.weight"].shape[0] for i in range(n_layers - 1))
    out = first[f"layers.{n_layers - 1}.weight"].shape[0]
    if first["layers.0.weight"].shape[1] != 2:
        raise DataFormatError(f"{paths[0]}: a 2-D image INR takes 2 inputs, this one takes "
                              f"{first['layers.0.weight'].shape[1]}")
    return WeightSpace(siren_spec(hidden, out), {k: torch.stack([sd[k] for sd in states]) for k in first})
