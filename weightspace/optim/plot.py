"""PNG plots of learned-optimizer experiments: inner-training curves and meta-loss curves.

Matplotlib's object API (``Figure``, no pyplot state, no backend switch), as everywhere in the library.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from .evaluate import Curves


def plot_curves(panels: Mapping[str, Curves], path: str | Path, title: str = "") -> Path:
    """One panel per entry of ``panels`` (e.g. held-out seeds, unseen width): mean training loss
    over seeds (the table's number) with a band of one geometric std around the geometric mean
    (the spread on a log axis), a dashed line at the horizon K."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, curves) in zip(axes, panels.items()):
        for name, c in curves.curves.items():
            steps = torch.arange(c.shape[1])
            line, = ax.plot(steps, c.mean(0), label=name, lw=1.6)
            logs = c.clamp_min(1e-12).log()
            centre, spread = logs.mean(0), logs.std(0) if len(c) > 1 else torch.zeros(c.shape[1])
            ax.fill_between(steps, (centre - spread).exp(), (centre + spread).exp(), color=line.get_color(), alpha=0.2)
        ax.axvline(curves.horizon, color="gray", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("inner step")
        ax.set_ylabel("training loss")
        ax.set_title(label)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_meta_losses(losses: Mapping[str, Sequence[float]], path: str | Path, window: int = 50) -> Path:
    """Meta-loss per meta-step (moving average over ``window`` steps) for each meta-model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for name, values in losses.items():
        v = torch.tensor(list(values), dtype=torch.float64)
        if len(v) == 0:
            continue
        w = max(1, min(window, len(v)))
        smooth = v.unfold(0, w, 1).mean(1) if len(v) >= w else v
        ax.plot(torch.arange(len(smooth)) + w - 1, smooth, label=name)
    ax.set_xlabel("meta-step")
    ax.set_ylabel(f"meta-loss (log mean training loss, {window}-step average)")
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
