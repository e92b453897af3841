"""Aligning soft tree ensembles: tree permutation plus, per pair of trees, the best flip / order pattern.

Following Kanoh & Sugiyama (ICLR 2025), two ensembles are aligned by one linear assignment of B's
trees to A's, where the similarity of a pair of trees is the best one over the per-tree group:
``S[i, j] = max_g <A_i, g(B_j)>`` with ``<., .>`` the inner product of a tree's split weights and
biases (nodes) and of its leaf values (weight matching), or the summed correlation of the trees'
split values and leaf probabilities on data (activation matching: flips negate a split value and
permute leaf probabilities exactly as they act on the weights, so one search serves both).

The search over the per-tree group is *exhaustive* (every element of :func:`~weightspace.symmetry.
trees.tree_group`, all pairs at once as ``G`` matrix products) while the group has at most
``exhaustive_limit`` elements (default 4096): perfect trees up to depth 3 (128 elements),
oblivious trees up to depth 5 (3840), decision lists at any depth (2, or 1 for the modified ones).
Deeper perfect trees are searched *exactly* by dynamic programming over depths (the best pairing
of two subtrees is the better of "children straight" and "children crossed, split negated"; memory
``T^2 4^D``). Deeper oblivious trees (depth >= 6) are searched by one assignment per pair of trees of B's levels
to A's on the absolute similarity of their splits, each level's flip set by the sign (the leaves
only follow): a heuristic that ignores the leaves while choosing, not guaranteed optimal (one
scipy assignment per pair: slow for many trees). Since ``<a, g b> <= |a| |b|`` with equality only
at ``g b = a`` (and by the same argument for the level assignment), all three recover a transformed
copy exactly.

The result is a :class:`~weightspace.symmetry.GroupElement` with a ``"permutation"`` part for the
trees' group and a ``"tree"`` part: ``act(b, spec, element)`` brings B onto A.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from ..inputs import as_state
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..symmetry.element import GroupElement, act
from ..symmetry.tree_kind import _flat, tree_structures
from ..symmetry.trees import TreeStructure, compose_elem, group_order, identity_elem, tree_group
from .merge_many import MergeManyResult

KNOWN = ("permutation", "tree")


def _kinds(spec: WeightSpaceSpec, kinds: Iterable[str] | None) -> tuple[str, ...]:
    chosen = KNOWN if kinds is None else tuple(kinds)
    for k in chosen:
        if k not in KNOWN:
            raise SpecError(f"tree alignment searches kinds {', '.join(KNOWN)}; got {k!r}")
    if not chosen:
        raise SpecError("kinds is empty: give ('permutation',), ('tree',) or both")
    return chosen


def _node_leaf(state: dict, s: TreeStructure) -> tuple[torch.Tensor, torch.Tensor]:
    nodes = torch.cat([state[s.weight].flatten(2), state[s.bias].unsqueeze(-1)], -1).double()
    return nodes, state[s.leaves].flatten(2).double()           # [T, N, F + 1], [T, L, C]


def _transformed(nodes: torch.Tensor, leaves: torch.Tensor, elems) -> tuple[torch.Tensor, torch.Tensor]:
    """Every tree of B under every element: ``[G, T, N, F]``, ``[G, T, L, C]`` (elems ``[G, *]``)."""
    src, sign, leaf = elems
    n = nodes[:, src].movedim(1, 0) * sign.to(nodes.dtype)[:, None, :, None]
    return n, leaves[:, leaf].movedim(1, 0)


def pair_scores(feats_a, feats_b, elems, chunk: int = 64) -> torch.Tensor:
    """``S[g, i, j] = <A_i, g(B_j)>`` over the nodes and leaves of each tree: ``[G, T_a, T_b]``."""
    na, la = feats_a
    out = []
    for start in range(0, elems[0].shape[0], chunk):
        part = tuple(e[start:start + chunk] for e in elems)
        nb, lb = _transformed(*feats_b, part)
        out.append(torch.einsum("inf,gjnf->gij", na, nb) + torch.einsum("ilc,gjlc->gij", la, lb))
    return torch.cat(out)


def _oblivious_levels(s: TreeStructure, feats_a, feats_b):
    """Deep oblivious trees: per pair, the splitting order and level flips from one assignment of B's
    levels to A's on ``|<A_level, B_level>|`` (sign: that of the inner product); the leaves are then
    re-indexed accordingly and the pair scored on everything. Scores ``[T, T]`` and elements."""
    from ..symmetry.trees import flip_elem, order_elem

    (na, la), (nb, lb) = feats_a, feats_b
    sims = torch.einsum("ikf,jmf->ijkm", na, nb)                    # [Ta, Tb, D, D]
    ta, tb = sims.shape[:2]
    elems = []
    for i in range(ta):
        for j in range(tb):
            rows, cols = linear_sum_assignment(sims[i, j].abs().numpy(), maximize=True)
            e = order_elem(s, torch.as_tensor(cols)[torch.as_tensor(rows).argsort()])
            for level in range(s.depth):
                if sims[i, j, level, int(e[0][level])] < 0:
                    e = compose_elem(e, flip_elem(s, level))
            elems.append(e)
    src, sign, leaf = (torch.stack([e[k] for e in elems]).unflatten(0, (ta, tb)) for k in range(3))
    nbt = nb[torch.arange(tb)[None, :, None], src] * sign.to(na.dtype)[..., None]
    lbt = lb[torch.arange(tb)[None, :, None], leaf]
    cost = torch.einsum("inf,ijnf->ij", na, nbt) + torch.einsum("ilc,ijlc->ij", la, lbt)
    return cost, (src, sign, leaf)


def _perfect_dp(s: TreeStructure, feats_a, feats_b):
    """Exact search for perfect trees by dynamic programming over depths: the best score of node
    ``k`` of A's tree under node ``m`` of B's tree (same depth) is ``+-<A_k, B_m>`` plus the best
    scores of the children paired straight (no flip) or crossed (flip). Scores ``[T, T]`` and a
    function giving the elements of chosen pairs."""
    (na, la), (nb, lb) = feats_a, feats_b
    depth = s.depth
    best = torch.einsum("ikc,jmc->ijkm", la, lb)                     # leaves: [Ta, Tb, 2^D, 2^D]
    flips = []
    for d in range(depth - 1, -1, -1):
        lo, hi = 2 ** d - 1, 2 ** (d + 1) - 1
        node = torch.einsum("ikf,jmf->ijkm", na[:, lo:hi], nb[:, lo:hi])
        c = best.unflatten(2, (-1, 2)).unflatten(4, (-1, 2))         # [Ta, Tb, k, 2, m, 2]
        straight = node + c[:, :, :, 0, :, 0] + c[:, :, :, 1, :, 1]
        crossed = -node + c[:, :, :, 0, :, 1] + c[:, :, :, 1, :, 0]
        flips.append(crossed > straight)
        best = torch.maximum(straight, crossed)
    flips.reverse()                                                  # flips[d]: [Ta, Tb, 2^d, 2^d]

    def elements(rows: torch.Tensor, cols: torch.Tensor):
        src = torch.zeros(len(rows), s.nodes, dtype=torch.long)
        sign = torch.ones(len(rows), s.nodes, dtype=torch.long)
        leaf = torch.zeros(len(rows), s.num_leaves, dtype=torch.long)
        for r, (i, j) in enumerate(zip(rows.tolist(), cols.tolist())):
            pairs = [(0, 0)]
            for d in range(depth):
                nxt = []
                for k, m in pairs:
                    f = bool(flips[d][i, j, k, m])
                    src[r, 2 ** d - 1 + k], sign[r, 2 ** d - 1 + k] = 2 ** d - 1 + m, -1 if f else 1
                    nxt += [(2 * k, 2 * m + f), (2 * k + 1, 2 * m + 1 - f)]
                pairs = nxt
            for k, m in pairs:
                leaf[r, k] = m
        return src, sign, leaf

    return best[:, :, 0, 0], elements


def _match_structure(s: TreeStructure, feats_a, feats_b, kinds, exhaustive_limit: int):
    use_tree = "tree" in kinds and group_order(s) > 1
    if use_tree and s.kind == "perfect" and group_order(s) > exhaustive_limit:
        cost, build = _perfect_dp(s, feats_a, feats_b)
        pick_elem = build
    elif use_tree and group_order(s) > exhaustive_limit:
        cost, elems = _oblivious_levels(s, feats_a, feats_b)           # [T, T], [T, T, *]
        pick_elem = lambda i, j: tuple(e[i, j] for e in elems)  # noqa: E731
    else:
        group = tree_group(s, max(exhaustive_limit, 1)) if use_tree else tuple(e[None] for e in identity_elem(s))
        scores = pair_scores(feats_a, feats_b, group)
        cost, arg = scores.max(0)
        pick_elem = lambda i, j: tuple(e[arg[i, j]] for e in group)  # noqa: E731
    n = cost.shape[0]
    if "permutation" in kinds:
        rows, cols = linear_sum_assignment(cost.numpy(), maximize=True)
        perm = torch.as_tensor(cols, dtype=torch.long)[torch.as_tensor(rows).argsort()]
    else:
        perm = torch.arange(n)
    idx = torch.arange(n)
    chosen = pick_elem(idx, perm)
    return perm, (chosen if use_tree else None)


def _element(spec, kinds, results) -> GroupElement:
    parts: dict[str, dict] = {"permutation": {}, "tree": {}}
    for s, (perm, chosen) in results.items():
        if "permutation" in kinds:
            parts["permutation"][s.group] = perm
        if chosen is not None:
            parts["tree"].update(_flat(s, chosen))
    return GroupElement(spec, {k: v for k, v in parts.items() if v})


def _require_trees(spec: WeightSpaceSpec) -> tuple[TreeStructure, ...]:
    structures = tree_structures(spec)
    if not structures:
        raise SpecError("tree alignment needs a spec with tree structures (SoftTreeEnsemble.weight_space_spec())")
    others = [g.name for g in spec.hidden_groups if g.name not in {s.group for s in structures}]
    if others:
        raise SpecError(f"tree alignment aligns tree ensembles only; this spec also has groups {', '.join(others)}")
    return structures


def tree_matching(spec: WeightSpaceSpec, params_a: Any, params_b: Any, *, kinds: Iterable[str] | None = None,
                  exhaustive_limit: int = 4096) -> GroupElement:
    """Weight matching of two tree ensembles: the element ``g`` with ``act(b, spec, g)`` closest to A
    (exactly A for a transformed copy). ``kinds``: ``("permutation",)`` permutes trees only (the
    ablation), ``("tree",)`` flips / reorders trees in place, default both."""
    kinds = _kinds(spec, kinds)
    a, b = as_state(params_a, spec, "params_a"), as_state(params_b, spec, "params_b")
    results = {s: _match_structure(s, _node_leaf(a, s), _node_leaf(b, s), kinds, exhaustive_limit)
               for s in _require_trees(spec)}
    return _element(spec, kinds, results)


def tree_activations(state: dict, s: TreeStructure, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split values ``u [n, T, N]`` and leaf probabilities ``mu [n, T, L]`` of one ensemble on ``x [n, F]``,
    from its weights alone (the routing is the structure's signed path matrix)."""
    x = x.double().flatten(1)
    u = torch.einsum("bf,tnf->btn", x, state[s.weight].double()) + state[s.bias].double()
    c, logsig = s.paths, torch.nn.functional.logsigmoid
    return u, (logsig(u) @ (c == 1).double() + logsig(-u) @ (c == -1).double()).exp()


def _standardized(u: torch.Tensor) -> torch.Tensor:
    """``[n, T, K]`` -> ``[T, K, n]``, centred and scaled per (tree, unit) so inner products are correlations."""
    z = u - u.mean(0)
    z = z / (z.pow(2).mean(0).sqrt() + 1e-8)
    return z.permute(1, 2, 0) / u.shape[0]


def tree_activation_matching(spec: WeightSpaceSpec, params_a: Any, params_b: Any, data: Any, *,
                             kinds: Iterable[str] | None = None, exhaustive_limit: int = 4096,
                             max_samples: int = 2048) -> GroupElement:
    """Activation matching of two tree ensembles on ``data`` (inputs ``[n, F]`` or ``(inputs, targets)``):
    trees are paired, and flips / orders chosen, to maximize the summed correlation of their split
    values and leaf probabilities (module docstring); the first ``max_samples`` inputs are used."""
    kinds = _kinds(spec, kinds)
    a, b = as_state(params_a, spec, "params_a"), as_state(params_b, spec, "params_b")
    x = data[0] if isinstance(data, (tuple, list)) else data
    x = torch.as_tensor(x)[:max_samples]
    results = {}
    for s in _require_trees(spec):
        ua, ma = tree_activations(a, s, x)
        ub, mb = tree_activations(b, s, x)
        fa, fb = (_standardized(ua), _standardized(ma)), (_standardized(ub), _standardized(mb))
        results[s] = _match_structure(s, fa, fb, kinds, exhaustive_limit)
    return _element(spec, kinds, results)


def tree_merge_many(spec: WeightSpaceSpec, models: Sequence[Any], *, kinds: Iterable[str] | None = None,
                    max_iter: int = 100, seed: int = 0, progress: bool = False) -> MergeManyResult:
    """MergeMany (Git Re-Basin, Algorithm 3) for tree ensembles: align every ensemble to the average
    of the others with :func:`tree_matching`, in random order, until a sweep moves none; average.
    ``perms[i]`` holds the :class:`GroupElement` applied to model ``i``."""
    states = [as_state(m, spec, f"model #{i}") for i, m in enumerate(models)]
    if len(states) < 2:
        raise ValueError("tree_merge_many needs at least two ensembles")
    aligned = [dict(s) for s in states]
    elems: list[GroupElement] = [GroupElement.identity(spec) for _ in states]
    gen = torch.Generator().manual_seed(seed)
    sweeps = 0

    def mean(group):
        return {n: sum(g[n] for g in group) / len(group) for n in group[0]}

    for sweeps in tqdm(range(1, max_iter + 1), desc="MergeMany (trees)", disable=not progress, leave=False):
        moved = False
        for i in torch.randperm(len(states), generator=gen).tolist():
            target = mean([aligned[j] for j in range(len(states)) if j != i])
            g = tree_matching(spec, target, states[i], kinds=kinds)
            new = act(states[i], spec, g)
            if any(not torch.equal(new[n], aligned[i][n]) for n in new):
                moved, aligned[i], elems[i] = True, new, g
        if not moved:
            break
    return MergeManyResult(mean(aligned), aligned, elems, sweeps)


def structured_weight_matching(spec: WeightSpaceSpec, params_a: Any, params_b: Any,
                               kinds: Iterable[str] | None) -> GroupElement | None:
    """The dispatch of :func:`~weightspace.align.weight_matching` for symmetry kinds beyond permutations:
    tree ensembles get :func:`tree_matching`; None hands a plain spec (kinds at most ``"permutation"``)
    back to the permutation search."""
    if tree_structures(spec):
        return tree_matching(spec, params_a, params_b, kinds=kinds)
    extra = [k for k in (kinds or ()) if k != "permutation"]
    if extra:
        raise SpecError(f"weight matching of this spec searches permutations only; kinds {', '.join(extra)} "
                        f"need a spec that carries them (e.g. a tree ensemble's)")
    return None
