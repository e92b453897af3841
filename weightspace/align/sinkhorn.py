"""Sinkhorn Re-Basin (Pena et al., CVPR 2023): soft, differentiable permutations learned by
gradient descent, rounded to hard ones at the end."""
from __future__ import annotations

from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..data.batches import functional_forward
from ..inputs import as_state
from ..spec.spec import WeightSpaceSpec
from ._train import mean_loss, minibatches
from ._tree import group_forest, solve_tree
from .weight_matching import matching_terms

Perms = dict[str, torch.Tensor]


def sinkhorn(log_alpha: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Doubly-stochastic matrices ``[..., n, n]`` from scores, by alternating row and column
    normalization in log space."""
    for _ in range(iterations):
        log_alpha = log_alpha - log_alpha.logsumexp(-1, keepdim=True)
        log_alpha = log_alpha - log_alpha.logsumexp(-2, keepdim=True)
    return log_alpha.exp()


def soft_permutations(spec: WeightSpaceSpec, logits: dict[str, torch.Tensor], tau: float,
                      iterations: int) -> dict[str, torch.Tensor]:
    """``{group: [size, size]}`` doubly-stochastic matrices; ``P[i, j]`` is the weight of B's element
    ``j`` at position ``i`` (a hard permutation ``p`` is ``P[i, p[i]] = 1``).

    A root group's matrix is ``sinkhorn(logits / tau)``. A head-structured child's is
    ``P_c[(h, a), (h', b)] = P_parent[h, h'] * T[h][a, b]`` with ``T[h] = sinkhorn(logits_c[h] / tau)``
    ``[blocks, block, block]``: doubly stochastic again, and a hard parent with hard ``T`` gives
    exactly the valid elements of the group (whole heads move, free within)."""
    forest = group_forest(spec)
    out: dict[str, torch.Tensor] = {}

    def visit(g: str, parent: torch.Tensor | None, block: int) -> None:
        s = sinkhorn(logits[g] / tau, iterations)
        if parent is None:
            out[g] = s
        else:
            n = parent.shape[0]
            out[g] = torch.einsum("hg,hab->hagb", parent, s).reshape(n * block, n * block)
        for child, b in forest.children.get(g, ()):
            visit(child, out[g], b)

    for root in forest.roots:
        visit(root, None, 1)
    return out


def apply_soft(spec: WeightSpaceSpec, state: dict[str, torch.Tensor], soft: dict[str, torch.Tensor],
               names) -> dict[str, torch.Tensor]:
    """``state`` with every group-acted axis mixed by the soft permutations (``P @ rows`` per
    segment, ``inner`` blocks kept together)."""
    out = {}
    for name in names:
        t = state[name]
        for action in spec.axis_actions(name):
            moved = t.movedim(action.axis, 0)
            pieces = []
            for group, size, inner, off in action.segments:
                seg = moved[off:off + size * inner]
                if group is not None and group in soft:
                    rows = seg.reshape(size, -1)
                    seg = (soft[group].to(rows) @ rows).reshape(seg.shape)
                pieces.append(seg)
            t = torch.cat(pieces, 0).movedim(0, action.axis)
        out[name] = t
    return out


def sinkhorn_matching(spec: WeightSpaceSpec, params_a: Any, params_b: Any, *, objective: str = "l2",
                      model: torch.nn.Module | None = None, data: Any = None, steps: int = 200, lr: float = 0.1,
                      tau: float = 1.0, iterations: int = 20, batch_size: int = 128,
                      loss_fn: Callable | None = None, seed: int = 0, progress: bool = False,
                      info: dict | None = None, return_soft: bool = False):
    """Permutations aligning B to A, learned as soft permutations (Sinkhorn Re-Basin).

    Per group, logits ``[size, size]`` (head-structured groups: ``[blocks, block, block]`` under
    their parent, see :func:`soft_permutations`) are trained with Adam on

    * ``objective="l2"``: ``sum_params ||A - P(B)||^2`` (data-free), or
    * ``objective="midpoint"``: the task loss of ``0.5 * (A + P(B))`` on mini-batches of ``data``
      run through ``model`` (in eval mode).

    The soft matrices are rounded to the closest valid group element by exact assignment
    (``_tree``). ``return_soft`` also returns the final soft matrices. ``info`` gets the losses.
    """
    a = as_state(params_a, spec, "params_a")
    b = as_state(params_b, spec, "params_b")
    if objective not in ("l2", "midpoint"):
        raise ValueError(f"objective must be 'l2' or 'midpoint', got {objective!r}")
    if objective == "midpoint" and (model is None or data is None):
        raise ValueError("objective='midpoint' needs model= and data=")
    terms = matching_terms(spec)
    names = tuple(dict.fromkeys(t.param for ts in terms.values() for t in ts))
    forest = group_forest(spec)
    gen = torch.Generator().manual_seed(seed)
    logits: dict[str, torch.Tensor] = {}
    for g in spec.groups:
        rows = g.size if g.heads is None else g.size // g.heads[1]
        n = g.size if g.heads is None else g.heads[1]
        shape = (n, n) if g.heads is None else (rows, n, n)
        logits[g.name] = (0.01 * torch.randn(shape, generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam(logits.values(), lr=lr)
    loss_fn = loss_fn or mean_loss
    losses = []
    batches = None
    was = model.training if model is not None else None
    if model is not None and objective == "midpoint":
        model.eval()
    try:
        for step in tqdm(range(steps), desc="Sinkhorn matching", disable=not progress, leave=False):
            soft = soft_permutations(spec, logits, tau, iterations)
            pb = apply_soft(spec, b, soft, names)
            if objective == "l2":
                loss = sum(((a[n] - pb[n]) ** 2).sum() for n in names)
            else:
                if batches is None:
                    batches = minibatches(data, batch_size, gen)
                try:
                    inputs, y = next(batches)
                except StopIteration:  # next epoch
                    batches = minibatches(data, batch_size, gen)
                    inputs, y = next(batches)
                mid = {n: 0.5 * (a[n] + pb[n]) if n in pb else a[n] for n in spec.names}
                loss = loss_fn(functional_forward(model, mid, inputs), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        if model is not None:
            model.train(was)
    with torch.no_grad():
        soft = soft_permutations(spec, logits, tau, iterations)
    costs = {g: m.double().numpy() for g, m in soft.items()}
    perms: Perms = {g.name: torch.arange(g.size) for g in spec.groups}
    for root in forest.roots:
        if any(terms.get(g) for g in forest.members(root)):
            new, _ = solve_tree(forest, root, costs)
            perms.update(new)
    if info is not None:
        info.update(losses=losses)
    return (perms, soft) if return_soft else perms
