"""Exact assignment over a tree of head-structured groups.

A spec's groups form a forest: a group with ``heads = (parent, block)`` moves whole blocks of
``block`` indices as its parent moves them and permutes freely inside each block (attention heads,
GroupNorm groups, nested heads of depthwise convolutions). Alignment methods produce, per group, a
similarity matrix ``M[i, j]`` (A's element ``i`` against B's element ``j``) and want the valid
element of the whole tree that maximizes ``sum_g sum_i M_g[i, p_g[i]]``.

That problem is separable once the parent's assignment is fixed: if A's block ``h`` goes to B's
block ``h'``, the best within-block assignments of every child are independent linear assignment
problems (LAPs) on the ``block x block`` sub-matrices ``M_c[h, h']``. So the value of pairing ``h``
with ``h'`` is ``M_parent[h, h'] + sum_children LAP(M_c[h, h'])``, and one LAP over those values
gives the exact joint optimum (recursively for nested heads). The cost is one small LAP per
(child, block pair), solved in batches.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..spec.spec import WeightSpaceSpec
from ..spec.blocks import GroupForest


def group_forest(spec: WeightSpaceSpec) -> GroupForest:
    """The spec's head structure (the one query in ``spec.blocks``)."""
    return spec.group_forest()


_PERMS: dict[int, np.ndarray] = {}


def _all_perms(b: int) -> np.ndarray:
    if b not in _PERMS:
        _PERMS[b] = np.array(list(itertools.permutations(range(b))), dtype=np.int64)
    return _PERMS[b]


SHORTCUT_MIN = 32     # square problems from this size first try the exact shortcuts of ``lap``


def lap(m: np.ndarray) -> np.ndarray:
    """Maximizing linear assignment: ``cols[i]`` is the column matched to row ``i``.

    Two exact shortcuts run before scipy's solver on square problems (each an O(n^2) check):

    * every row's maximum is strict and the row maxima sit in distinct columns: that assignment is
      the unique optimum (any other one loses in some row and gains in none). This is the common
      case late in a descent and whenever B is close to a permuted A.
    * ``m`` is an outer product ``u v^T`` (one term of width one: the bias-only cost of weight
      matching's informed start): sorting ``u`` and ``v`` alike is optimal (rearrangement
      inequality). scipy's augmenting paths are pathologically slow on these (45 s for n = 3072,
      against 0.2 s for a full-rank cost of the same size).
    """
    n = m.shape[0]
    if n >= SHORTCUT_MIN and m.shape == (n, n):
        cols = _strict_argmax(m)
        if cols is None:
            cols = _rank_one(m)
        if cols is not None:
            return cols
    rows, cols = linear_sum_assignment(m, maximize=True)
    out = np.empty(m.shape[0], dtype=np.int64)
    out[rows] = cols
    return out


def _strict_argmax(m: np.ndarray) -> np.ndarray | None:
    """The row-argmax assignment when it is a permutation and every row's maximum is strict."""
    best = m.argmax(1)
    if np.bincount(best, minlength=m.shape[1]).max() != 1:
        return None
    top = m[np.arange(m.shape[0]), best]
    second = np.partition(m, -2, axis=1)[:, -2]
    return best.astype(np.int64) if bool((second < top).all()) else None


def _rank_one(m: np.ndarray) -> np.ndarray | None:
    """The optimum of ``max sum_i u_i v_p(i)`` when ``m = u v^T`` (to rounding), else None."""
    i, j = np.unravel_index(np.abs(m).argmax(), m.shape)
    pivot = m[i, j]
    if pivot == 0 or not np.isfinite(pivot):
        return None
    u, v = m[:, j], m[i, :] / pivot
    tol = 1e-12 * abs(pivot)
    r = (i + 1) % m.shape[0]                    # one other row first: most costs fail here, in O(n)
    if np.abs(u[r] * v - m[r]).max() > tol or np.abs(np.outer(u, v) - m).max() > tol:
        return None
    out = np.empty(m.shape[0], dtype=np.int64)
    out[np.argsort(u, kind="stable")] = np.argsort(v, kind="stable")
    return out


def batched_lap(blocks: np.ndarray, enumerate_up_to: int = 5, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``K`` maximizing LAPs at once. ``blocks``: ``[K, b, b]``. Returns ``values [K]`` and
    ``cols [K, b]``. Tiny blocks (``b <= enumerate_up_to``) are solved by enumerating all ``b!``
    assignments in one vectorized gather; larger ones by scipy, one call each."""
    k, b, _ = blocks.shape
    if b == 1:
        return blocks[:, 0, 0].copy(), np.zeros((k, 1), dtype=np.int64)
    if b <= enumerate_up_to:
        perms = _all_perms(b)  # [m, b]
        rows = np.arange(b)
        values = np.empty(k)
        cols = np.empty((k, b), dtype=np.int64)
        for s in range(0, k, chunk):
            part = blocks[s:s + chunk]                              # [c, b, b]
            scores = part[:, rows[None, :], perms].sum(-1)          # [c, m]
            best = scores.argmax(-1)
            values[s:s + chunk] = scores[np.arange(len(part)), best]
            cols[s:s + chunk] = perms[best]
        return values, cols
    cols = np.stack([lap(m) for m in blocks]) if k else np.zeros((0, b), dtype=np.int64)
    values = np.take_along_axis(blocks, cols[:, :, None], axis=2)[..., 0].sum(-1)
    return values, cols


def solve_tree(forest: GroupForest, root: str, costs: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], float]:
    """The valid element of the tree under ``root`` maximizing ``sum_g sum_i costs[g][i, p_g[i]]``
    (exact; groups missing from ``costs`` contribute nothing). Returns ``{group: LongTensor}`` and
    the optimal value."""
    within: dict[str, np.ndarray] = {}

    def value(g: str) -> np.ndarray:
        n = forest.sizes[g]
        v = np.array(costs[g], dtype=np.float64) if g in costs else np.zeros((n, n))
        for child, b in forest.children.get(g, ()):
            vc = value(child)                                                # [n*b, n*b]
            blocks = vc.reshape(n, b, n, b).transpose(0, 2, 1, 3).reshape(n * n, b, b)
            vals, cols = batched_lap(blocks)
            v += vals.reshape(n, n)
            within[child] = cols.reshape(n, n, b)
        return v

    v_root = value(root)
    p_root = lap(v_root)
    total = float(v_root[np.arange(len(p_root)), p_root].sum())
    perms: dict[str, torch.Tensor] = {}

    def assign(g: str, p: np.ndarray) -> None:
        perms[g] = torch.from_numpy(p.copy())
        for child, b in forest.children.get(g, ()):
            w = within[child][np.arange(len(p)), p]                          # [n, b]
            assign(child, (p[:, None] * b + w).reshape(-1))

    assign(root, p_root)
    return perms, total


def tree_score(forest: GroupForest, root: str, costs: dict[str, np.ndarray], perms: dict[str, torch.Tensor]) -> float:
    """``sum_g sum_i costs[g][i, p_g[i]]`` for the tree's current element."""
    total = 0.0
    for g in forest.members(root):
        if g in costs:
            p = perms[g].numpy() if g in perms else np.arange(forest.sizes[g])
            total += float(costs[g][np.arange(len(p)), p].sum())
    return total
