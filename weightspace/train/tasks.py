"""Tasks: a zoo, a target per network, a loss and the metrics of a split.

Design: a :class:`Task` is a small frozen record of functions, so a new workflow (INR editing, a
custom regression) is a new record and not a new trainer. ``predict(output, w)`` turns the model's
output into what the loss and the metrics compare with the targets (logits, a predicted accuracy,
the rendered image of an edited INR); ``loss(pred, y)`` returns one value per network (so MixUp can
mix the losses of the two labels); ``metrics(preds, ys)`` sees a whole split. ``primary`` is the
metric early stopping watches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import UsageError
from .metrics import accuracy, kendall_tau, mse, r2_score

__all__ = ["Task", "classification", "regression", "TASKS", "get_task", "recipe_hint"]


@dataclass(frozen=True)
class Task:
    """What to learn from a zoo. ``target``: the zoo record holding each network's target;
    ``out_features``: the model's output width (None: an equivariant head returning a WeightSpace,
    ``0``: read from the data: number of classes)."""

    name: str
    target: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
    primary: str
    higher_is_better: bool = True
    out_features: int | None = 0
    predict: Callable = field(default=lambda out, w: out)
    mixable: bool = True                     # targets are labels or values MixUp may mix


def _ce(logits, y):
    return F.cross_entropy(logits, y.long(), reduction="none")


def _classification_metrics(logits, y):
    return {"accuracy": accuracy(logits, y), "loss": float(_ce(logits, y).mean())}


def classification(name: str = "classification", target: str = "label") -> Task:
    """Class labels: cross-entropy, accuracy (early stopping on validation accuracy)."""
    return Task(name, target, _ce, _classification_metrics, "accuracy")


def _sq(pred, y):
    return (pred.reshape(y.shape[0], -1).squeeze(-1) - y.to(pred.dtype)) ** 2


def _regression_metrics(pred, y):
    pred = pred.reshape(y.shape[0], -1).squeeze(-1)
    return {"kendall_tau": kendall_tau(pred, y), "r2": r2_score(pred, y), "mse": mse(pred, y)}


def _sigmoid(out, w):
    return torch.sigmoid(out.squeeze(-1))


def regression(name: str = "regression", target: str = "test_accuracy", unit_interval: bool = True) -> Task:
    """One value per network (e.g. its test accuracy): squared error; Kendall's tau, R^2, MSE
    (early stopping on validation tau). ``unit_interval``: predictions pass through a sigmoid."""
    return Task(name, target, _sq, _regression_metrics, "kendall_tau", out_features=1,
                predict=_sigmoid if unit_interval else (lambda out, w: out.squeeze(-1)))


# name -> (task factory, the command that builds its zoo)
TASKS: dict[str, tuple[Callable[[], Task], str]] = {
    "mnist-inr": (lambda: classification("mnist-inr"),
                  "python datasets/mnist_inr.py --root ../shared/data/mnist --out {zoo}  (about an hour, 2 workers)"),
    "fashion-mnist-inr": (lambda: classification("fashion-mnist-inr"),
                          "python datasets/fashion_mnist_inr.py --root DIR --out {zoo}"),
    "digits-inr": (lambda: classification("digits-inr"),
                   "weightspace fit-inrs --source digits --out {zoo}  (about 10 s)"),
    "inr-classification": (lambda: classification("inr-classification"),
                           "weightspace fit-inrs --source SOURCE --out {zoo}"),
    "generalization": (lambda: regression("generalization"),
                       "weightspace make-zoo --out {zoo}  (CNNs on digits)"),
}


def get_task(name: str | Task) -> Task:
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}", "--task")
    return TASKS[name][0]()


def recipe_hint(task: str, zoo: str | Path) -> str:
    """The command that builds the zoo a task reads (for the error when it is missing)."""
    cmd = TASKS.get(task, (None, "weightspace fit-inrs / make-zoo --out {zoo}"))[1]
    return cmd.format(zoo=zoo)
