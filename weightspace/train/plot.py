"""The training-curve PNG of a run: training loss and the validation metric per epoch."""
from __future__ import annotations

from pathlib import Path


def plot_curves(history: list[dict], primary: str, path: Path, title: str, test: float | None = None) -> Path:
    from matplotlib.figure import Figure          # no pyplot: no backend or global state touched

    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_val = fig.subplots(1, 2)
    epochs = [h["epoch"] + 1 for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    ax_val.plot(epochs, [h["val"][primary] for h in history], marker="o", ms=3, label=f"validation {primary}")
    if test is not None:
        ax_val.axhline(test, color="tab:red", ls="--", lw=1, label=f"test {primary} (best epoch): {test:.4f}")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel(primary)
    ax_val.grid(alpha=0.3)
    ax_val.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
