"""``meta_train``: learn an update rule by truncated backpropagation through unrolled inner training.

Design decisions:

* **Persistent truncated unrolls.** ``tasks`` networks (one width per meta-step, from the family)
  train for ``horizon`` inner steps; each meta-step advances them ``unroll`` steps with the rule,
  backpropagates the mean log training loss of those steps into the meta-parameters, and detaches
  (the bias of truncation, traded for cost). Finished tasks are replaced by new seeds.
* **Meta-loss: the mean over steps of the log of the mean training loss over the tasks.** The log
  weighs late progress as much as early progress; taking it *after* the mean over tasks matters: a
  mean of per-task logs rewards driving one task to 1e-7 while others stay at 0.2 (a first version
  learned exactly that: high-variance steps, weights blowing up past the horizon).
* **First-order inner gradients.** Inner gradients are computed without a graph (no second
  derivatives); the meta-gradient flows through the weights, the optimizer state and the rule.
* **One rule, many widths.** The rule is built once per width's spec; all share the master rule's
  meta-parameters through ``torch.func.functional_call`` (their shapes do not depend on widths).
* **Checkpoints are data.** Every ``every`` meta-steps the meta-parameters, the meta-optimizer, the
  generator and the meta-loss curve are written atomically (``torch.load(weights_only=True)``
  reads them); ``resume=True`` continues from the file (in-flight unrolls restart with new tasks).
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.func import functional_call

from ..errors import UsageError
from .rule import LearnedUpdate
from .tasks import TaskFamily


@dataclass
class MetaTrainResult:
    """The trained rule (built for the family's first width) and the meta-loss per meta-step."""

    rule: LearnedUpdate
    meta_losses: list[float]


class _Slot:
    """The in-flight inner training of ``tasks`` networks of one width."""

    def __init__(self, family: TaskFamily, rule: LearnedUpdate, width: int, seeds: list[int]):
        self.width = width
        self.params, self.buffers = family.init(width, seeds)
        self.state = rule.init_state(self.params)
        self.t = 0


def _detach(d: dict) -> dict:
    return {k: v.detach() for k, v in d.items()}


def unroll(family: TaskFamily, rule: LearnedUpdate, master: dict, slot: _Slot, steps: int,
           generator: torch.Generator) -> torch.Tensor:
    """Advance ``slot`` by ``steps`` inner steps of ``rule`` (run with the ``master`` meta-parameters);
    return the meta-loss (mean over steps of the log mean training loss; differentiable in ``master``)."""
    params = {n: p.detach().requires_grad_() for n, p in slot.params.items()}   # inner gradients need a graph
    buffers, state = slot.buffers, slot.state
    _, spec = family.module(slot.width)
    terms = []
    for k in range(steps + 1):
        x, y = family.batch(generator)
        losses, new_buffers = family.losses(slot.width, params, buffers, x, y)
        if k > 0:
            terms.append(losses.mean().clamp_min(1e-8).log())
        if k == steps:
            break
        grads = torch.autograd.grad(losses.sum(), list(params.values()), retain_graph=True, allow_unused=True)
        grads = {n: (g if g is not None else torch.zeros_like(p)).detach() for (n, p), g in zip(params.items(), grads)}
        weights = {**params, **{n: new_buffers[n] for n in spec.weight_names if n not in params}}
        updates, state = functional_call(rule, master, (weights, grads, state))
        params = {n: p + updates[n] for n, p in params.items()}
        buffers = new_buffers
    slot.params, slot.buffers, slot.state = _detach(params), _detach(buffers), _detach(state)
    slot.t += steps
    return torch.stack(terms).mean()


def _save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def meta_train(family: TaskFamily, meta_model: str = "unf", *, meta_steps: int = 200, unroll_steps: int = 10,
               horizon: int = 50, tasks: int = 4, meta_lr: float = 3e-3, clip: float = 1.0, seed: int = 0,
               checkpoint: str | Path | None = None, every: int = 25, resume: bool = True, progress: bool = True,
               rule: LearnedUpdate | None = None, **options) -> MetaTrainResult:
    """Meta-train a :class:`LearnedUpdate` called ``meta_model`` (``options`` go to it: ``lr``, ``mix``,
    the meta-model's own) on ``family``; see the module docstring for the method.

    ``meta_steps``: meta-gradient steps (Adam, ``meta_lr``, gradient norm clipped to ``clip``);
    ``unroll_steps``: inner steps per truncation; ``horizon``: inner steps per task before new seeds;
    ``tasks``: networks per meta-step. ``checkpoint``: file written every ``every`` meta-steps (and at
    the end); with ``resume`` an existing file is continued. Returns the rule and the meta-loss curve."""
    if unroll_steps < 1 or horizon < unroll_steps or tasks < 1:
        raise UsageError(f"need unroll_steps >= 1, horizon >= unroll_steps and tasks >= 1, got {unroll_steps}, "
                         f"{horizon}, {tasks}", "meta_train")
    _, spec0 = family.module(family.widths[0])
    rule = rule if rule is not None else LearnedUpdate(spec0, meta_model, **options)
    master = dict(rule.named_parameters())
    rules = {family.widths[0]: rule}
    opt = torch.optim.Adam(master.values(), lr=meta_lr)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and resume and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        rule.load_state_dict(saved["rule"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        losses = list(saved["meta_losses"])
    next_seed = seed * 1_000_003 + 7919 * len(losses)

    def save():
        if path is not None:
            _save(path, {"rule": rule.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                         "meta_losses": list(losses)})

    slot, failures = None, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=meta_steps, initial=len(losses), desc=f"meta-train {meta_model}", leave=False)
    while len(losses) < meta_steps:
        if slot is None or slot.t >= horizon:
            width = family.widths[int(torch.randint(len(family.widths), (1,), generator=gen))]
            if width not in rules:
                if rule.config is None:
                    raise UsageError("a rule built from a ready nn.Module trains on one width only; build it by "
                                     "name to meta-train over several widths", "meta_train")
                rules[width] = LearnedUpdate(family.module(width)[1], rule.config["meta_model"],
                                             features=rule.features, form=rule.form, **rule.config["options"])
            slot = _Slot(family, rules[width], width, list(range(next_seed, next_seed + tasks)))
            next_seed += tasks
        loss = unroll(family, rules[slot.width], master, slot, unroll_steps, gen)
        value = loss.detach().item()
        if not math.isfinite(value):             # a diverged inner run: drop it, keep the meta-parameters
            slot, failures = None, failures + 1
            if failures >= 20:
                raise FloatingPointError(f"the meta-loss was {value} 20 times in a row at meta-step {len(losses)}; "
                                         f"lower meta_lr (now {meta_lr}) or the rule's lr")
            continue
        failures = 0
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(master.values(), clip)
        opt.step()
        losses.append(value)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(meta_loss=f"{value:.3f}", lr=f"{float(rule.log_lr.detach().exp()):.2g}")
        if len(losses) % every == 0:
            save()
    if bar is not None:
        bar.close()
    save()
    return MetaTrainResult(rule, losses)
