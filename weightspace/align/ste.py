"""The straight-through estimator of Git Re-Basin: learn permutations through the task loss."""
from __future__ import annotations

from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..data.batches import functional_forward
from ..inputs import as_state
from ..spec.spec import WeightSpaceSpec
from ._params import permute_entries
from ._train import mean_loss, minibatches
from .weight_matching import weight_matching

Perms = dict[str, torch.Tensor]


def ste_matching(spec: WeightSpaceSpec, model: torch.nn.Module, params_a: Any, params_b: Any, data: Any, *,
                 epochs: int = 1, steps: int | None = None, lr: float = 1e-3, batch_size: int = 128,
                 loss_fn: Callable | None = None, seed: int = 0, init: dict | None = None, train_mode: bool = True,
                 progress: bool = False, info: dict | None = None) -> Perms:
    """Permutations aligning B to A, learned so that the *midpoint* of A and the permuted B has a low
    task loss (Ainsworth et al., Algorithm 2).

    A free copy ``theta`` of A's parameters is trained; at every step its projection onto B's orbit,
    ``P(B)`` with ``P = weight_matching(theta, B)`` (warm-started from the previous step), replaces it
    in the forward pass (straight-through: ``theta + (P(B) - theta).detach()``), the loss of
    ``0.5 * (A + P(B))`` on a mini-batch is back-propagated to ``theta``, and Adam updates it. The
    permutations of the last projection are returned.

    ``model``: a module of the architecture (run functionally; its own weights are untouched;
    ``train_mode`` runs it in training mode so BatchNorm uses batch statistics, as at the merged
    point the interpolated running statistics are meaningless). ``data``: ``(inputs, targets)``
    tensors (shuffled with ``seed``) or an iterable of batches. ``loss_fn(outputs, targets)``:
    mean loss (cross-entropy / MSE by default). Runs ``epochs`` passes, or exactly ``steps``
    steps when given. ``info`` gets the per-step ``losses``.
    """
    a = as_state(params_a, spec, "params_a")
    b = as_state(params_b, spec, "params_b")
    loss_fn = loss_fn or mean_loss
    learn = [p.name for p in spec.params if p.role == "parameter" and a[p.name].is_floating_point()]
    theta = {n: a[n].clone().requires_grad_(True) for n in learn}
    opt = torch.optim.Adam(theta.values(), lr=lr)
    perms = weight_matching(spec, a, b, init=init, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.train(train_mode)
    losses = []
    bar = tqdm(total=steps, desc="STE matching", disable=not progress, leave=False)
    step = 0
    try:
        while steps is None or step < steps:
            for inputs, y in minibatches(data, batch_size, gen):
                with torch.no_grad():
                    now = {**a, **{n: t.detach() for n, t in theta.items()}}
                    perms = weight_matching(spec, now, b, init=perms, seed=seed + step + 1)
                    pb: dict[str, torch.Tensor] = {}
                    permute_entries(b, spec.names, spec, perms, pb)
                mid = {n: 0.5 * (a[n] + pb[n]) if a[n].is_floating_point() else a[n].clone() for n in spec.names}
                for n in learn:
                    mid[n] = 0.5 * (a[n] + theta[n] + (pb[n] - theta[n]).detach())
                loss = loss_fn(functional_forward(model, mid, inputs), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                step += 1
                bar.update(1)
                if steps is not None and step >= steps:
                    break
            if steps is None:
                epochs -= 1
                if epochs <= 0:
                    break
        with torch.no_grad():
            now = {**a, **{n: t.detach() for n, t in theta.items()}}
            perms = weight_matching(spec, now, b, init=perms, seed=seed)
    finally:
        model.train(was)
        bar.close()
    if info is not None:
        info.update(losses=losses, steps=step)
    return perms
