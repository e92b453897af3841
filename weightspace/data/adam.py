"""Adam on a batch of independent models stored as rows of one tensor, each row with its own step count."""
from __future__ import annotations

import torch


class BiasCorrections:
    """Adam's per-step factors for a fixed learning rate, as float32 tables indexed by step number
    (computed once in Python floats, exactly as ``torch.optim.Adam`` computes them)."""

    def __init__(self, lr: float, betas: tuple[float, float], max_step: int, dtype=torch.float32):
        b1, b2 = betas
        steps = range(max_step + 1)
        self.step_size = torch.tensor([0.0] + [lr / (1 - b1 ** t) for t in steps[1:]], dtype=dtype)
        self.bc2_sqrt = torch.tensor([1.0] + [(1 - b2 ** t) ** 0.5 for t in steps[1:]], dtype=dtype)


def adam_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
              step: torch.Tensor, lr: float | torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8, tables: BiasCorrections | None = None) -> None:
    """One Adam update, in place, of ``param [n, P]`` (row ``i`` is model ``i``).

    ``step [n]`` holds each row's step number *after* this update (1 for a fresh model), so rows that
    joined the batch at different times get their own bias corrections; ``lr`` is a float or a
    per-row ``[n]`` tensor. The arithmetic is the same sequence of float32 operations as
    ``torch.optim.Adam`` (default, non-foreach), so a row updates exactly as a one-model
    ``torch.optim.Adam`` would given the same gradients. ``tables`` (for a float ``lr``) saves
    recomputing the bias corrections every step.
    """
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    if tables is not None:
        step_size = tables.step_size[step].unsqueeze(1)
        bias_correction2_sqrt = tables.bc2_sqrt[step].unsqueeze(1)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.sub_(torch.mul(exp_avg, step_size).div_(denom))
        return
    # bias corrections in Python floats, as torch.optim.Adam computes them
    steps = step.tolist()
    lrs = lr.tolist() if isinstance(lr, torch.Tensor) else [lr] * len(steps)
    step_size = [r / (1 - beta1 ** t) for r, t in zip(lrs, steps)]
    bc2_sqrt = [(1 - beta2 ** t) ** 0.5 for t in steps]
    step_size = torch.tensor(step_size, dtype=param.dtype, device=param.device).unsqueeze(1)        # [n, 1]
    bias_correction2_sqrt = torch.tensor(bc2_sqrt, dtype=param.dtype, device=param.device).unsqueeze(1)
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.sub_(torch.mul(exp_avg, step_size).div_(denom))
