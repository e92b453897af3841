"""Loss and accuracy along the linear path between two networks, and the barrier on it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.batches import functional_forward, iter_batches
from ..spec.spec import WeightSpaceSpec
from .interpolate import interpolate


@dataclass
class BarrierCurve:
    """``loss[i]`` and ``accuracy[i]`` (fraction, None without class targets) of the network
    ``(1 - alphas[i]) * a + alphas[i] * b``."""

    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    label: str = ""
    extra: dict = field(default_factory=dict)

    def _linear(self, values: np.ndarray) -> np.ndarray:
        return (1 - self.alphas) * values[0] + self.alphas * values[-1]

    @property
    def loss_barrier(self) -> float:
        """``max_alpha [L(alpha) - ((1 - alpha) L(0) + alpha L(1))]`` (Git Re-Basin's definition)."""
        return float((self.loss - self._linear(self.loss)).max())

    @property
    def accuracy_barrier(self) -> float | None:
        """``max_alpha [((1 - alpha) acc(0) + alpha acc(1)) - acc(alpha)]``, in fractions."""
        return None if self.accuracy is None else float((self._linear(self.accuracy) - self.accuracy).max())

    def at(self, alpha: float, which: str = "loss") -> float:
        values = self.loss if which == "loss" else self.accuracy
        return float(np.interp(alpha, self.alphas, values))

    @property
    def midpoint_loss_barrier(self) -> float:
        return self.at(0.5) - 0.5 * (self.loss[0] + self.loss[-1])

    @property
    def midpoint_accuracy_barrier(self) -> float | None:
        if self.accuracy is None:
            return None
        return 0.5 * (self.accuracy[0] + self.accuracy[-1]) - self.at(0.5, "accuracy")


def default_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer class targets, mean squared error otherwise (summed over the batch)."""
    if not target.is_floating_point():
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="sum")
    return F.mse_loss(output, target, reduction="sum") / max(1, output[0].numel())


@torch.no_grad()
def evaluate(model_fn: Any, state: Mapping[str, torch.Tensor], data: Any, *,
             loss_fn: Callable | None = None, batch_size: int | None = 1024) -> tuple[float, float | None]:
    """Mean loss and accuracy (None without integer targets) of ``state`` on ``data``.

    ``model_fn``: a module (evaluated in eval mode with ``state`` swapped in) or a callable
    ``model_fn(state, *inputs) -> outputs``. ``loss_fn(outputs, targets)`` returns the *summed*
    loss of a batch (default: cross-entropy / MSE)."""
    loss_fn = loss_fn or default_loss
    module = model_fn if isinstance(model_fn, torch.nn.Module) else None
    was = module.training if module is not None else None
    if module is not None:
        module.eval()
    total = correct = 0.0
    n = 0
    has_acc = None
    try:
        for inputs, y in iter_batches(data, batch_size):
            if y is None:
                raise ValueError("evaluating a loss needs targets: pass data as (inputs, targets)")
            out = functional_forward(module, state, inputs) if module is not None else model_fn(state, *inputs)
            total += float(loss_fn(out, y))
            n += y.shape[0] if y.is_floating_point() else y.numel()   # class targets: per token / pixel
            if has_acc is None:
                has_acc = not y.is_floating_point() and out.dim() >= 2
            if has_acc:
                correct += float((out.argmax(-1) == y).sum())
    finally:
        if module is not None:
            module.train(was)
    if n == 0:
        raise ValueError("evaluating a loss needs at least one sample; the data holds none")
    return total / n, (correct / n if has_acc else None)


def barrier_curve(model_fn: Any, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], data: Any,
                  n: int = 11, *,
                  loss_fn: Callable | None = None, correct: Callable[[dict, float], dict] | None = None,
                  label: str = "", spec: WeightSpaceSpec | None = None, batch_size: int | None = 1024,
                  progress: bool = False) -> BarrierCurve:
    """Evaluate ``(1 - alpha) a + alpha b`` at ``n`` evenly spaced ``alpha`` in ``[0, 1]``.

    Pass ``b`` already aligned to ``a`` (``permute(b, spec, weight_matching(spec, a, b))``) for the
    curve after alignment, the original ``b`` for the naive one. ``correct(state, alpha) -> state``
    is applied to every interpolated network before evaluation (e.g. BatchNorm reset or REPAIR,
    see :func:`weightspace.align.reset_bn_statistics` / :func:`weightspace.align.repair`).
    ``data``: ``(inputs, targets)`` or an iterable of such batches. ``n >= 2``: the two ends at least
    (with fewer, the curve's "A" and "B" would be the same network).
    """
    if int(n) != n or n < 2:
        raise ValueError(f"a barrier curve needs n >= 2 points (both ends), got {n}")
    alphas = np.linspace(0.0, 1.0, int(n))
    losses, accs = [], []
    for alpha in tqdm(alphas, desc=f"barrier {label}".strip(), disable=not progress, leave=False):
        state = interpolate(a, b, float(alpha), spec)
        if correct is not None:
            state = correct(state, float(alpha))
        loss, acc = evaluate(model_fn, state, data, loss_fn=loss_fn, batch_size=batch_size)
        losses.append(loss)
        accs.append(acc)
    acc_arr = None if any(x is None for x in accs) else np.array(accs)
    return BarrierCurve(alphas, np.array(losses), acc_arr, label)


def barrier_table(curves: Sequence[BarrierCurve], seconds: Sequence[float | None] | None = None) -> str:
    """A text table: endpoints' and midpoint's loss / accuracy, and the barriers, one row per curve
    (accuracies in percent, accuracy barriers in percentage points)."""
    has_time = seconds is not None and any(s is not None for s in seconds)
    head = (f"{'method':30s} {'loss A':>8s} {'loss B':>8s} {'loss mid':>9s} {'barrier':>8s} {'acc A':>7s} "
            f"{'acc B':>7s} {'acc mid':>8s} {'acc barrier':>11s}" + (f" {'time':>8s}" if has_time else ""))
    lines = [head, "-" * len(head)]
    for i, c in enumerate(curves):
        row = f"{c.label:30s} {c.loss[0]:8.4f} {c.loss[-1]:8.4f} {c.at(0.5):9.4f} {c.loss_barrier:8.4f}"
        if c.accuracy is not None:
            row += (f" {100 * c.accuracy[0]:6.2f}% {100 * c.accuracy[-1]:6.2f}% {100 * c.at(0.5, 'accuracy'):7.2f}% "
                    f"{100 * c.accuracy_barrier:10.2f}p")
        else:
            row += f" {'-':>7s} {'-':>7s} {'-':>8s} {'-':>11s}"
        if has_time:
            s = seconds[i]
            row += f" {s:7.2f}s" if s is not None else f" {'-':>8s}"
        lines.append(row)
    return "\n".join(lines)
