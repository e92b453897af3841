"""Barrier plots: loss and accuracy along interpolation paths, one line per curve."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .barrier import BarrierCurve


def plot_barrier(curves: BarrierCurve | Sequence[BarrierCurve], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG with the loss (left) and, where known, the accuracy (right) of every curve
    against the interpolation weight ``alpha``; returns the path."""
    from matplotlib.figure import Figure          # drawn without pyplot: no backend or global state touched

    curves = [curves] if isinstance(curves, BarrierCurve) else list(curves)
    with_acc = any(c.accuracy is not None for c in curves)
    fig = Figure(figsize=(11 if with_acc else 5.5, 4.2))
    axes = fig.subplots(1, 2 if with_acc else 1, squeeze=False)
    ax_loss = axes[0, 0]
    for c in curves:
        ax_loss.plot(c.alphas, c.loss, marker="o", ms=3, label=f"{c.label} (barrier {c.loss_barrier:.3f})")
    ax_loss.set_xlabel("alpha  (0 = model A, 1 = model B)")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss along the linear path")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    if with_acc:
        ax_acc = axes[0, 1]
        for c in curves:
            if c.accuracy is not None:
                ax_acc.plot(c.alphas, 100 * c.accuracy, marker="o", ms=3,
                            label=f"{c.label} (barrier {100 * c.accuracy_barrier:.1f} pts)")
        ax_acc.set_xlabel("alpha  (0 = model A, 1 = model B)")
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.set_title("accuracy along the linear path")
        ax_acc.grid(alpha=0.3)
        ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
