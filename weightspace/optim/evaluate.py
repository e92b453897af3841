"""``evaluate``: inner-training curves of optimizers on held-out tasks, a table and the steps to a target.

Design decision: evaluation runs the real ``torch.optim`` objects (``LearnedOptimizer`` and Adam) on
real modules, one network at a time, so it measures what a user gets; every optimizer sees the same
initializations and the same minibatch stream per seed. The curve is the loss on the whole training
set after each step (BatchNorm in train mode, its running statistics untouched by the measurement).
Adam's learning rate is tuned by :func:`tune_adam` on meta-training tasks, never on held-out ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ..spec.spec import WeightSpaceSpec
from .tasks import TaskFamily

MakeOptimizer = Callable[[nn.Module, WeightSpaceSpec], torch.optim.Optimizer]


def _full_loss(family: TaskFamily, width: int, module: nn.Module) -> float:
    params = {n: p.detach()[None] for n, p in module.named_parameters()}
    buffers = {n: b.detach()[None] for n, b in module.named_buffers()}
    with torch.no_grad():
        losses, _ = family.losses(width, params, buffers, family.x, family.y)
    return float(losses[0])


def train_curve(family: TaskFamily, width: int, seed: int, make_optimizer: MakeOptimizer, steps: int) -> torch.Tensor:
    """``[steps + 1]``: the training-set loss before and after each of ``steps`` optimizer steps."""
    import torch.nn.functional as F

    module = family.network(width, seed)
    spec = family.module(width)[1]
    opt = make_optimizer(module, spec)
    gen = torch.Generator().manual_seed(int(seed))
    curve = [_full_loss(family, width, module)]
    module.train()
    for _ in range(steps):
        x, y = family.batch(gen)
        opt.zero_grad()
        F.cross_entropy(module(x), y).backward()
        opt.step()
        value = _full_loss(family, width, module)
        curve.append(value if value == value else float("inf"))
    return torch.tensor(curve)


def adam(lr: float) -> MakeOptimizer:
    return lambda module, spec: torch.optim.Adam(module.parameters(), lr=lr)


def tune_adam(family: TaskFamily, steps: int, *, lrs: Sequence[float] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
              seeds: Sequence[int] = (0, 1), width: int | None = None) -> tuple[float, dict[float, float]]:
    """Adam's learning rate from the grid ``lrs``: the lowest mean training loss after ``steps`` steps
    on ``family`` (give the meta-training family and seeds). Returns ``(best lr, {lr: loss})``."""
    width = width if width is not None else family.widths[0]
    scores = {lr: float(torch.stack([train_curve(family, width, s, adam(lr), steps)[-1] for s in seeds]).mean())
              for lr in lrs}
    return min(scores, key=scores.get), scores


@dataclass
class Curves:
    """Loss curves ``name -> [seeds, steps + 1]`` and the unroll horizon ``K`` they are judged at."""

    curves: dict[str, torch.Tensor]
    horizon: int
    reference: str = "adam"

    def at(self, name: str, step: int) -> tuple[float, float]:
        c = self.curves[name][:, step]
        return float(c.mean()), float(c.std()) if len(c) > 1 else 0.0

    def steps_to(self, name: str, target: float) -> int | None:
        """The first step at which the mean curve of ``name`` is at or below ``target``."""
        hit = (self.curves[name].mean(0) <= target).nonzero()
        return int(hit[0]) if len(hit) else None

    def table(self) -> str:
        """Mean ± std training loss at K and 5K, steps to the reference's loss at K, and the speed-up."""
        k = self.horizon
        last = min(5 * k, next(iter(self.curves.values())).shape[1] - 1)
        target = self.at(self.reference, k)[0]
        ref_steps = self.steps_to(self.reference, target)
        rows = [f"{'optimizer':<16} {'loss@' + str(k):>17} {'loss@' + str(last):>17} "
                f"{'steps to ' + self.reference + '@' + str(k):>16} {'speed-up':>9}"]
        for name in self.curves:
            (m1, s1), (m5, s5) = self.at(name, k), self.at(name, last)
            n = self.steps_to(name, target)
            speed = f"{ref_steps / n:.2f}x" if n and ref_steps else "-"
            reached = n if n is not None else "never"
            rows.append(f"{name:<16} {m1:>9.4f} ± {s1:<6.4f}{m5:>9.4f} ± {s5:<6.4f}{reached:>16} {speed:>9}")
        return "\n".join(rows)


def evaluate(family: TaskFamily, optimizers: Mapping[str, MakeOptimizer], *, horizon: int, seeds: Sequence[int],
             width: int | None = None, steps: int | None = None, reference: str = "adam",
             progress: bool = False) -> Curves:
    """Curves of every optimizer (``name -> make_optimizer(module, spec)``) on ``family`` at ``width``
    for each seed, ``steps`` (default ``5 * horizon``) steps long. ``reference`` names the optimizer
    whose loss at ``horizon`` is the target of :meth:`Curves.steps_to`."""
    width = width if width is not None else family.widths[0]
    steps = steps if steps is not None else 5 * horizon
    if reference not in optimizers:
        raise ValueError(f"the reference optimizer {reference!r} is not among {sorted(optimizers)}")
    items = [(n, s) for n in optimizers for s in seeds]
    if progress:
        from tqdm.auto import tqdm
        items = tqdm(items, desc="evaluate", leave=False)
    out: dict[str, list[torch.Tensor]] = {n: [] for n in optimizers}
    for name, seed in items:
        out[name].append(train_curve(family, width, seed, optimizers[name], steps))
    return Curves({n: torch.stack(v) for n, v in out.items()}, horizon, reference)


def learned(rule) -> MakeOptimizer:
    """``make_optimizer`` for a trained :class:`~weightspace.optim.LearnedUpdate` (rebuilt per width)."""
    from .optimizer import LearnedOptimizer

    return lambda module, spec: LearnedOptimizer(module, spec, rule.for_spec(spec))
