"""Weight matching (Git Re-Basin, Ainsworth et al., ICLR 2023): permute B's neurons so that its
weights are as close to A's as possible, by coordinate descent over the groups."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..symmetry.permutation import check_permutations
from ..spec.blocks import Block
from ..spec.cache import cached
from ..inputs import as_state
from ._params import permute_entries
from ._tree import group_forest, solve_tree, tree_score

Perms = dict[str, torch.Tensor]


# A term of the objective is one block of the spec's "where groups act" query (``spec.blocks``).
Term = Block


def matching_terms(spec: WeightSpaceSpec,
                   roles: tuple[str, ...] = ("parameter", "statistic")) -> dict[str, tuple[Term, ...]]:
    """Per group, every (parameter, axis, segment) it acts on, among floating entries of the given roles."""
    def build():
        out = {g: tuple(b for b in blocks if b.role in roles and b.floating) for g, blocks in spec.blocks().items()}
        return {g: b for g, b in out.items() if b}
    return cached(spec, f"align_terms_{'_'.join(roles)}", build)


def segment_rows(t: torch.Tensor, term: Term) -> torch.Tensor:
    """``[size, F]``: the entries of ``term``'s stretch, one row per group element (its ``inner``
    entries along the axis and everything on the other axes flattened into the row)."""
    return t.movedim(term.axis, 0).narrow(0, term.offset, term.size * term.inner).reshape(term.size, -1)


def _distinct(t: torch.Tensor, term: Term) -> bool:
    """Whether ``term``'s rows of ``t`` (see :func:`segment_rows`) are not all equal, i.e. the term can
    tell group elements apart (compared in place, without copying the rows)."""
    if term.size < 2:
        return False
    v = t.movedim(term.axis, 0).narrow(0, term.offset, term.size * term.inner).unflatten(0, (term.size, term.inner))
    return not bool((v == v[:1]).all())


def weight_matching(spec: WeightSpaceSpec, params_a: Any, params_b: Any, *, max_iter: int = 100, seed: int = 0,
                    init: Mapping[str, Any] | None = None, groups: Iterable[str] | None = None,
                    statistics: bool = True, tol: float = 1e-9, progress: bool = False,
                    info: dict | None = None, kinds: Iterable[str] | None = None) -> Perms:
    """Permutations ``{group: LongTensor[size]}`` that align network B to network A:
    ``permute(params_b, spec, perms)`` is the element of B's orbit closest to A found by
    coordinate descent on ``sum_params <A, P(B)>`` (maximizing the inner product = minimizing the
    L2 distance, as permutations preserve norms).

    Each step picks one group tree (a group with its head-structured descendants), builds its
    similarity matrix ``M[i, j] = sum over (param, axis) the group acts on of <A's slice i, B's slice
    j>`` with B's *other* axes permuted by their current permutations (``[n, F] @ [F, n]`` matmuls,
    one per parameter stretch; ``inner`` blocks and concatenated axes handled by the layouts), and
    solves the linear assignment exactly (heads: see ``_tree``). Trees are visited in a random
    order (seeded) each sweep; a step is kept only if the total objective increases; it stops after
    a sweep without improvement or ``max_iter`` sweeps.

    Without ``init``, the first sweep is an informed start rather than a step from the identity:
    each tree's first assignment uses only the terms whose other axes are fixed or already
    assigned in this sweep (biases, norm parameters, first-layer rows), so B's arbitrary initial
    order does not pollute it; trees with no such term use all terms. For B a permuted copy of A
    this start is already exact wherever such terms exist, and it avoids most of the local optima
    plain coordinate descent from the identity falls into on small networks.

    ``params_a`` / ``params_b``: state dicts (or one-network WeightSpaces) matching ``spec``.
    ``init``: starting permutations (default identity). ``groups``: optimize only the trees holding
    these groups (others keep ``init``). ``statistics``: include norm statistics (BatchNorm running
    mean / var) in the objective. ``info``: a dict filled with ``sweeps``, ``objective`` (start,
    end), ``steps`` (accepted tree updates), ``lap_solves`` and ``bound`` (``|A| |B|``, the objective's
    upper bound, reached exactly when B is a permuted copy of A and it was recovered).

    A tree is solved again only when a group it shares a parameter with has moved since its last
    solve (otherwise its cost matrix, hence its answer, is unchanged); the descent stops when no
    tree is left to solve.

    ``kinds``: the symmetry kinds to search. A spec carrying further kinds (a tree ensemble's
    subtree flips and splitting orders) is aligned by :func:`~weightspace.align.trees.tree_matching`
    and a :class:`~weightspace.symmetry.GroupElement` is returned (``("permutation",)`` permutes the
    trees only); ``ws.act(params_b, spec, result)`` brings B onto A either way.
    """
    if kinds is not None or getattr(spec, "symmetries", ()):
        from .trees import structured_weight_matching
        element = structured_weight_matching(spec, params_a, params_b, kinds)
        if element is not None:
            return element
    a = as_state(params_a, spec, "params_a")
    b = as_state(params_b, spec, "params_b")
    roles = ("parameter", "statistic") if statistics else ("parameter",)
    terms = matching_terms(spec, roles)
    forest = group_forest(spec)
    roots = [r for r in forest.roots if any(terms.get(g) for g in forest.members(r))]
    if groups is not None:
        wanted = set(groups)
        for g in wanted:
            spec.group(g)  # unknown names raise
        roots = [r for r in roots if wanted & set(forest.members(r))]
    perms: Perms = {g.name: torch.arange(g.size) for g in spec.groups}
    if init:
        perms.update({k: v.cpu() for k, v in check_permutations(spec, init).items()})
        for k, v in perms.items():
            if v.dim() != 1:
                raise SpecError(f"init permutation for '{k}' must be one element [size], got {tuple(v.shape)}")

    tree_terms = {r: [t for g in forest.members(r) for t in terms.get(g, ())] for r in roots}
    tree_params = {r: tuple(dict.fromkeys(t.param for t in tree_terms[r])) for r in roots}
    all_params = tuple(dict.fromkeys(n for r in roots for n in tree_params[r]))
    a_rows = {t: segment_rows(a[t.param], t) for r in roots for t in tree_terms[r]}
    b_cur: dict[str, torch.Tensor] = {}
    permute_entries(b, all_params, spec, perms, b_cur)

    def objective(names, state, ref=a) -> float:
        return float(sum(torch.sum(ref[n] * state[n], dtype=torch.float64) for n in names))

    # A tree's cost matrices depend on the current permutations of the groups it shares parameters
    # with (and on its own where a parameter carries it on two axes). A tree solved since the last
    # change of those is "clean": solving it again would give the same answer, so it is skipped, and
    # the descent ends when no tree is dirty (the usual final sweep without improvement, for free).
    owner = {g: r for r in roots for g in forest.members(r)}
    neighbors = {r: set() for r in roots}
    for r in roots:
        for t in tree_terms[r]:
            neighbors[r].update(owner[g] for g in t.others if g in owner)
    for r in roots:
        for q in list(neighbors[r]):
            neighbors[q].add(r)
    dirty = set(roots)
    # Each term's product, in B's original order along the group's axis, depends only on the
    # permutations of the groups on the parameter's other axes: it is cached until one of them moves,
    # and then updated through the columns that moved only (``A[:, C] @ (B_new - B_old)[:, C].T``)
    # when they are few, as late in the descent, instead of recomputed.
    version = {g: 0 for g in perms}
    cache: dict[Term, tuple[tuple, torch.Tensor, torch.Tensor]] = {}
    # Trees none of whose parameters carry one of the tree's groups on a second axis have an objective
    # linear in the tree's permutations: the change is read off the cost matrices.
    linear = {r: not any(set(forest.members(r)) & t.others for t in tree_terms[r]) for r in roots}

    def term_cost(t: Term, g: str) -> torch.Tensor:
        key = tuple(version[o] for o in sorted(t.others))
        hit = cache.get(t)
        if hit is not None and hit[0] == key and g not in t.others:
            return hit[1]
        rows = segment_rows(b_cur[t.param], t)
        rows = rows[perms[g].to(rows.device).argsort()]          # B's original order along the group
        if hit is not None and g not in t.others:
            cols = (rows != hit[2]).any(0).nonzero().flatten()
            if len(cols) * 4 < rows.shape[1]:
                prod = hit[1] + a_rows[t][:, cols] @ (rows[:, cols] - hit[2][:, cols]).T
                cache[t] = (key, prod, rows)
                return prod
        # rows of width one (biases, norm vectors): an exact outer product in float64, which ``lap``
        # solves by sorting (scipy is pathologically slow on rank-one costs)
        prod = a_rows[t].double() @ rows.double().T if rows.shape[1] == 1 else a_rows[t] @ rows.T
        cache[t] = (key, prod, rows)
        return prod

    # The informed start reads only terms that can tell the group's elements apart: a term whose rows
    # are all equal in A or in B (a fresh BatchNorm's ones and zeros, zero biases) scores every
    # assignment the same. A tree with no such term whose other axes are known waits until one
    # appears (later trees of the sweep assign more groups); only when none can move does the rest
    # go with all its terms. Without this, fresh-BN networks (MobileNet v2) lock a residual stream
    # to an arbitrary order first and the descent stops in a seed-dependent local optimum.
    informative = {t: _distinct(a[t.param], t) and _distinct(b[t.param], t) for t in a_rows} if not init else {}

    def ready_terms(r: str) -> set[Term]:
        return {t for g in forest.members(r) for t in terms.get(g, ()) if t.others <= known and informative[t]}

    def informed_order(order: list[int]):
        pending = list(order)
        while pending:
            i = next((i for i in pending if ready_terms(roots[i])), None)
            if i is None:
                yield from pending
                return
            pending.remove(i)
            yield i

    gen = torch.Generator().manual_seed(seed)
    start = objective(all_params, b_cur)
    steps = sweeps = lap_solves = 0
    known: set[str] | None = None if init else set()  # groups assigned so far in the informed sweep
    bar = tqdm(range(max_iter), desc="weight matching", disable=not progress, leave=False)
    for sweeps in bar:
        order = torch.randperm(len(roots), generator=gen).tolist()
        for i in (order if known is None else informed_order(order)):
            r = roots[i]
            if r not in dirty:
                continue
            dirty.discard(r)
            usable = None
            if known is not None:
                usable = ready_terms(r)
                known.update(forest.members(r))
            costs = {}
            for g in forest.members(r):
                m = None
                for t in terms.get(g, ()):
                    if usable and t not in usable:
                        continue
                    prod = term_cost(t, g)
                    m = prod if m is None else m + prod
                if m is not None:
                    costs[g] = m.double().cpu().numpy()
            new, _ = solve_tree(forest, r, costs)
            lap_solves += 1
            changed = [g for g in new if not torch.equal(new[g], perms[g])]
            if not changed:
                continue
            trial = {**perms, **new}
            if known is not None:
                accept = True
            elif linear[r]:
                old_score = tree_score(forest, r, costs, perms)
                gain = tree_score(forest, r, costs, trial) - old_score
                accept = gain > tol * max(1.0, abs(old_score))
            else:
                moved: dict[str, torch.Tensor] = {}
                permute_entries(b, tree_params[r], spec, trial, moved)
                old_obj, new_obj = objective(tree_params[r], b_cur), objective(tree_params[r], moved)
                accept = new_obj > old_obj + tol * max(1.0, abs(old_obj))
            if accept:
                perms = trial
                permute_entries(b, tree_params[r], spec, perms, b_cur)
                for g in changed:
                    version[g] += 1
                steps += 1
                dirty.update(neighbors[r])
        if known is not None:
            known = None
            dirty = set(roots)  # the informed start is always followed by a full sweep
            continue
        if not dirty:
            break
    sweeps += 1
    if info is not None:
        bound = (objective(all_params, a) * objective(all_params, b, b)) ** 0.5
        info.update(sweeps=sweeps, steps=steps, lap_solves=lap_solves, objective=(start, objective(all_params, b_cur)),
                    bound=bound)
    return perms
