"""Weight matching recovers a hidden group element exactly, on every traced architecture."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import weightspace as ws
from align_helpers import BY_NAME, traced
from helpers import outputs, rel_err
from weightspace.align._tree import batched_lap, group_forest, solve_tree
from weightspace.align.weight_matching import weight_matching

# the list first; every other architecture of the test suite after it
NAMED = ["mlp_relu", "vgg_bn", "resnet20", "densenet", "tiny_transformer", "hand_attention", "vit"]
OTHERS = [n for n in BY_NAME if n not in NAMED]


def _recover(name: str, seed: int, randomize: bool = True):
    model, spec, inputs = traced(name, 0, randomize)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    hidden = ws.random_permutation(spec, generator=torch.Generator().manual_seed(100 + seed))
    b = ws.permute(a, spec, hidden)
    perms = weight_matching(spec, a, b, seed=seed)
    return model, spec, inputs, a, b, perms


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", NAMED)
def test_recovers_hidden_permutation_exactly(name, seed):
    model, spec, inputs, a, b, perms = _recover(name, seed)
    aligned = ws.permute(b, spec, perms)
    assert all(torch.equal(aligned[k], a[k]) for k in a), "aligned b differs from a"
    # the returned element undoes the hidden one on every group (valid heads included)
    ws.check_permutations(spec, perms)
    # and aligning only permutes: aligned b computes b's function
    assert rel_err(outputs(model, inputs, b), outputs(model, inputs, aligned)) < 1e-5


@pytest.mark.parametrize("name", OTHERS)
def test_recovers_on_every_other_architecture(name):
    _, spec, _, a, b, perms = _recover(name, 0)
    aligned = ws.permute(b, spec, perms)
    assert all(torch.equal(aligned[k], a[k]) for k in a)


@pytest.mark.parametrize("name", ["mlp_relu", "resnet20", "tiny_transformer"])
def test_recovers_at_default_initialization(name):
    """Norm layers at their init values (all ones / zeros) carry no information; still exact."""
    _, spec, _, a, b, perms = _recover(name, 0, randomize=False)
    aligned = ws.permute(b, spec, perms)
    assert all(torch.equal(aligned[k], a[k]) for k in a)


def test_noisy_copy_is_aligned_back():
    model, spec, _ = traced("resnet20")
    a = model.state_dict()
    g = torch.Generator().manual_seed(5)
    noisy = {k: v + 0.01 * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() and v.numel() > 1 else v
             for k, v in a.items()}
    b = ws.permute(noisy, spec, ws.random_permutation(spec, generator=g))
    perms = weight_matching(spec, a, b)
    aligned = ws.permute(b, spec, perms)
    assert all(torch.equal(aligned[k], noisy[k]) for k in a)


def test_objective_never_decreases_and_info_is_filled():
    model, spec, _ = traced("tiny_transformer")
    torch.manual_seed(3)
    other = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    info = {}
    weight_matching(spec, model.state_dict(), other, info=info)
    start, end = info["objective"]
    assert end >= start and info["sweeps"] >= 1


def test_seeded_and_restricted_to_groups():
    model, spec, _ = traced("mlp_relu")
    torch.manual_seed(0)
    other = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    p1 = weight_matching(spec, model.state_dict(), other, seed=4)
    p2 = weight_matching(spec, model.state_dict(), other, seed=4)
    assert all(torch.equal(p1[g], p2[g]) for g in p1)
    only = spec.groups[0].name
    p3 = weight_matching(spec, model.state_dict(), other, groups=[only])
    assert all(torch.equal(p3[g.name], torch.arange(g.size)) for g in spec.groups if g.name != only)


def test_mismatched_weights_name_the_parameter():
    model, spec, _ = traced("mlp_relu")
    a = model.state_dict()
    b = dict(a)
    b["2.weight"] = torch.zeros(3, 3)
    with pytest.raises(ws.SpecError, match="2.weight"):
        weight_matching(spec, a, b)
    b = {k: v for k, v in a.items() if k != "0.bias"}
    with pytest.raises(ws.SpecError, match="0.bias"):
        weight_matching(spec, a, b)


# ------------------------------------------------------------------------- exact tree assignment


def _brute_force(forest, root, costs):
    """Best valid element by enumeration (tiny trees only)."""
    best = -np.inf

    def elements(g, parent_perm, block):
        n = forest.sizes[g]
        if parent_perm is None:
            candidates = [np.array(p) for p in itertools.permutations(range(n))]
        else:
            blocks = n // block
            within = list(itertools.product(itertools.permutations(range(block)), repeat=blocks))
            candidates = [np.concatenate([parent_perm[h] * block + np.array(w[h]) for h in range(blocks)])
                          for w in within]
        for p in candidates:
            kids = forest.children.get(g, ())
            if not kids:
                yield {g: p}
                continue
            def combos(i):
                if i == len(kids):  # noqa: B023 -- combos is consumed within this iteration
                    yield {}
                    return
                c, b = kids[i]  # noqa: B023 -- as above
                for sub in elements(c, p, b):  # noqa: B023 -- as above
                    for rest in combos(i + 1):
                        yield {**sub, **rest}
            for rest in combos(0):
                yield {g: p, **rest}

    for element in elements(root, None, 1):
        value = sum(costs[g][np.arange(len(p)), p].sum() for g, p in element.items() if g in costs)
        best = max(best, value)
    return best


@pytest.mark.parametrize("seed", range(2))
def test_tree_assignment_is_exact(seed):
    """Heads: 3 heads, q/k group and v group with 2 dims per head, plus a nested group; the
    per-block-pair LAPs followed by the head LAP reach the brute-force optimum."""
    spec = ws.WeightSpaceSpec.from_axes(
        {"wq": ("q", None), "wv": ("v", None), "wo": (None, "v"), "wn": ("n", None), "wh": ("h", None)},
        {"wq": torch.zeros(6, 2), "wv": torch.zeros(6, 2), "wo": torch.zeros(2, 6), "wn": torch.zeros(12, 2),
         "wh": torch.zeros(3, 2)},
        heads={"q": ("h", 2), "v": ("h", 2), "n": ("v", 2)})
    forest = group_forest(spec)
    rng = np.random.default_rng(seed)
    costs = {g: rng.normal(size=(forest.sizes[g], forest.sizes[g])) for g in ("h", "q", "v", "n")}
    perms, value = solve_tree(forest, "h", costs)
    ws.check_permutations(spec, perms)
    achieved = sum(costs[g][np.arange(forest.sizes[g]), perms[g].numpy()].sum() for g in costs)
    assert abs(achieved - value) < 1e-9
    assert abs(value - _brute_force(forest, "h", costs)) < 1e-9


@pytest.mark.parametrize("b", [2, 3, 5, 7])
def test_batched_lap_matches_scipy(b):
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(b)
    blocks = rng.normal(size=(20, b, b))
    values, cols = batched_lap(blocks)
    for m, v, c in zip(blocks, values, cols):
        r, cc = linear_sum_assignment(m, maximize=True)
        assert abs(m[r, cc].sum() - v) < 1e-9
        assert sorted(c.tolist()) == list(range(b))
