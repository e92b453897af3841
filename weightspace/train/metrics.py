"""Metrics of the trainer's tasks, on whole splits: ``[N, K]`` logits or ``[N]`` predictions."""
from __future__ import annotations

import torch

__all__ = ["accuracy", "kendall_tau", "r2_score", "mse"]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max is the label."""
    return float((logits.argmax(-1) == labels.long()).double().mean())


def kendall_tau(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Kendall's tau-b rank correlation (scipy), the generalization-prediction literature's metric."""
    from scipy.stats import kendalltau
    if pred.numel() < 2:
        return 0.0
    tau = kendalltau(pred.double().flatten().numpy(), target.double().flatten().numpy()).statistic
    return float(tau) if tau == tau else 0.0      # constant predictions: no ranking, tau 0 (scipy gives NaN)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``."""
    pred, target = pred.double().flatten(), target.double().flatten()
    ss_tot = float(((target - target.mean()) ** 2).sum())
    return 1.0 - float(((pred - target) ** 2).sum()) / max(ss_tot, 1e-300)


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred.double() - target.double()) ** 2).mean())
