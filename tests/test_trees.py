"""Soft tree ensembles: their symmetries (tree permutation, subtree flips, splitting orders) as a kind
of group element, the spec hook of ``from_module``, and their alignment and merging."""
from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

import weightspace as ws
from weightspace.align import tree_activation_matching, tree_matching, tree_merge_many
from weightspace.models import SoftTreeEnsemble
from weightspace.spec.errors import SpecError, TraceError
from weightspace.symmetry.extended import SpecWithSymmetries
from weightspace.symmetry.tree_kind import split_order, tree_flip
from weightspace.symmetry.trees import TREE_KINDS, check_elems, group_order, tree_group
from weightspace.testing import assert_invariant

F, C, T = 5, 3, 6


def ensemble(kind, depth, trees=T, seed=0):
    m = SoftTreeEnsemble(F, C, trees, depth, kind, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():                      # nonzero biases, so that a flip's negation is visible there too
        m.bias.normal_(generator=torch.Generator().manual_seed(seed + 1))
    x = torch.randn(64, F, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    return m, x, ws.WeightSpaceSpec.from_module(m, x)


def state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def out(m, sd, x):
    return torch.func.functional_call(m, sd, (x,))


def moved(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


CASES = [(k, d) for k in TREE_KINDS for d in (1, 2, 3)]


@pytest.mark.parametrize("kind,depth", CASES)
def test_every_tree_symmetry_keeps_the_function_and_moves_weights(kind, depth):
    m, x, spec = ensemble(kind, depth)
    sd, y = state(m), out(m, state(m), x)
    s = spec.symmetries[0]
    elements = [ws.GroupElement.from_permutations(spec, {"trees": torch.arange(T).roll(1)})]
    for node in range(s.nodes):
        try:
            elements.append(tree_flip(spec, 2, node))
        except SpecError:
            assert kind != "perfect" and kind != "oblivious", f"{kind} trees can be flipped at every node"
    if kind == "oblivious":
        elements += [split_order(spec, 1, p) for p in itertools.permutations(range(depth)) if list(p) != sorted(p)]
    flips = {"perfect": s.nodes, "oblivious": depth, "decision_list": 1, "modified_decision_list": 0}[kind]
    orders = len(list(itertools.permutations(range(depth)))) - 1 if kind == "oblivious" else 0
    assert len(elements) == 1 + flips + orders
    for g in elements:
        new = ws.act(sd, spec, g)
        assert float((out(m, new, x) - y).abs().max()) < 1e-10
        assert moved(new, sd) > 1e-3
    assert_invariant(lambda p: out(m, p, x), spec, sd, trials=2)


@pytest.mark.parametrize("kind,depth", [(k, d) for k in TREE_KINDS for d in (1, 2)] +
                         [("decision_list", 3), ("modified_decision_list", 3)])
def test_the_per_tree_group_is_every_symmetry_of_the_routing(kind, depth):
    """Brute force over all signed node permutations and leaf permutations: exactly the elements the
    kind enumerates map root-to-leaf paths onto paths; so a decision list has only its deepest flip
    and a modified decision list none, and neither has a splitting order."""
    _, _, spec = ensemble(kind, depth, trees=1)
    s = spec.symmetries[0]
    valid = set()
    for src in itertools.permutations(range(s.nodes)):
        for sign in itertools.product((1, -1), repeat=s.nodes):
            for leaf in itertools.permutations(range(s.num_leaves)):
                e = (torch.tensor(src), torch.tensor(sign), torch.tensor(leaf))
                try:
                    check_elems(s, e, "brute force")
                except SpecError:
                    continue
                valid.add((src, sign, leaf))
    group = {tuple(tuple(t.tolist()) for t in e) for e in zip(*tree_group(s))}
    assert group == valid and len(valid) == group_order(s)
    if kind == "modified_decision_list":
        assert valid == {(tuple(range(depth)), (1,) * depth, tuple(range(depth)))}
    if kind == "decision_list":
        assert len(valid) == 2 and all(sign[:-1] == (1,) * (depth - 1) for _, sign, _ in valid)
    if kind.endswith("decision_list") and depth > 1:
        with pytest.raises(SpecError, match="no subtree flip"):
            tree_flip(spec, 0, 0)
        with pytest.raises(SpecError, match="only oblivious"):
            split_order(spec, 0, [1, 0])


def test_group_elements_of_trees_invert_compose_and_batch():
    m, x, spec = ensemble("oblivious", 3)
    sd = state(m)
    gen = torch.Generator().manual_seed(3)
    g, h = ws.random_element(spec, gen), ws.random_element(spec, gen)
    assert moved(ws.act(ws.act(sd, spec, g), spec, g.inverse()), sd) < 1e-12
    assert moved(ws.act(sd, spec, g.compose(h)), ws.act(ws.act(sd, spec, g), spec, h)) < 1e-12
    batch = ws.WeightSpace.from_state_dicts([sd, state(ensemble("oblivious", 3, seed=5)[0])], spec)
    gb = ws.random_element(spec, gen, batch_size=2)
    moved_batch = ws.act(batch, spec, gb).to_state_dicts()
    for i, one in enumerate(batch.to_state_dicts()):
        assert moved(moved_batch[i], ws.act(one, spec, gb[i])) < 1e-12
    only_perm = ws.random_element(spec, gen, kinds=("permutation",))
    assert "tree" not in only_perm.parts


def test_values_that_are_not_tree_symmetries_are_refused():
    _, _, spec = ensemble("modified_decision_list", 2)
    n = T * 2
    sign = torch.ones(n, dtype=torch.long)
    sign[1] = -1
    with pytest.raises(SpecError, match="not a symmetry"):
        ws.GroupElement(spec, {"tree": {"trees.node": torch.arange(n) % 2, "trees.sign": sign,
                                        "trees.leaf": torch.arange(n) % 2}})
    with pytest.raises(SpecError, match="need all of"):
        ws.GroupElement(spec, {"tree": {"trees.node": torch.arange(n) % 2}})
    with pytest.raises(SpecError, match="unknown entry"):
        ws.GroupElement(spec, {"tree": {"leaves.node": torch.arange(n) % 2}})


def test_from_module_returns_the_hand_written_spec_and_checks_it():
    m, x, spec = ensemble("perfect", 2)
    assert isinstance(spec, SpecWithSymmetries) and spec.group("trees").size == T
    again = SpecWithSymmetries.from_dict(spec.to_dict())
    assert again.symmetries == spec.symmetries and again.first_difference(spec) is None
    assert ensemble("oblivious", 2)[2].first_difference(spec) is not None

    class Wrong(SoftTreeEnsemble):          # claims oblivious symmetries for perfect trees
        def structure(self):
            s = super().structure()
            return type(s)(s.group, "oblivious", s.depth, s.trees, s.weight, s.bias, s.leaves)

    with pytest.raises(SpecError):
        ws.WeightSpaceSpec.from_module(Wrong(F, C, T, 2), x.float())

    class Unpermutable(SoftTreeEnsemble):   # the trees are not interchangeable when scaled by position
        def forward(self, x):
            return torch.einsum("btl,tlc,t->bc", self.routing(x), self.leaves,
                                torch.arange(1.0, self.trees + 1, dtype=x.dtype))

    with pytest.raises(TraceError, match="does not describe the module"):
        ws.WeightSpaceSpec.from_module(Unpermutable(F, C, T, 2), x.float())


@pytest.mark.parametrize("kind,depth", [(k, d) for k in ("perfect", "oblivious") for d in (1, 2, 3)])
def test_alignment_recovers_a_random_element_of_the_whole_tree_group(kind, depth):
    m, x, spec = ensemble(kind, depth, trees=12)
    sd = state(m)
    g = ws.random_element(spec, torch.Generator().manual_seed(depth))
    b = ws.act(sd, spec, g)
    for found in (ws.weight_matching(spec, sd, b), tree_activation_matching(spec, sd, b, x)):
        assert moved(ws.act(b, spec, found), sd) < 1e-12
    assert moved(ws.act(sd, spec, g.compose(ws.weight_matching(spec, sd, b))), sd) < 1e-12


def test_deep_trees_are_searched_beyond_enumeration():
    for kind, depth in (("perfect", 4), ("oblivious", 6)):
        m, x, spec = ensemble(kind, depth, trees=3)
        sd = state(m)
        assert group_order(spec.symmetries[0]) > 4096
        b = ws.act(sd, spec, ws.random_element(spec, torch.Generator().manual_seed(0)))
        assert moved(ws.act(b, spec, tree_matching(spec, sd, b)), sd) < 1e-12


def test_permutation_only_search_is_the_ablation():
    m, x, spec = ensemble("perfect", 2, trees=8)
    sd = state(m)
    p = ws.random_element(spec, torch.Generator().manual_seed(0), kinds=("permutation",))
    b = ws.act(sd, spec, p)
    found = ws.weight_matching(spec, sd, b, kinds=("permutation",))
    assert set(found.parts) == {"permutation"} and moved(ws.act(b, spec, found), sd) < 1e-12
    flipped = ws.act(b, spec, tree_flip(spec, 0, 0))
    assert moved(ws.act(flipped, spec, ws.weight_matching(spec, sd, flipped, kinds=("permutation",))), sd) > 1e-3
    assert moved(ws.act(flipped, spec, ws.weight_matching(spec, sd, flipped)), sd) < 1e-12
    mlp_spec = ws.WeightSpaceSpec.mlp([3, 4, 2])
    mlp_sd = {q.name: torch.randn(q.shape, dtype=torch.float64) for q in mlp_spec.params}
    assert set(ws.weight_matching(mlp_spec, mlp_sd, mlp_sd, kinds=("permutation",))) == {"0"}
    with pytest.raises(SpecError, match="permutations only"):
        ws.weight_matching(mlp_spec, mlp_sd, mlp_sd, kinds=("tree",))


def test_merge_many_of_transformed_copies_is_the_ensemble():
    m, x, spec = ensemble("oblivious", 2, trees=8)
    sd = state(m)
    copies = [ws.act(sd, spec, ws.random_element(spec, torch.Generator().manual_seed(i))) for i in range(3)]
    result = tree_merge_many(spec, copies)
    assert moved(ws.act(result.merged, spec, ws.weight_matching(spec, sd, result.merged)), sd) < 1e-12
    assert float((out(m, result.merged, x) - out(m, sd, x)).abs().max()) < 1e-10


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(TREE_KINDS), depth=st.integers(1, 4), trees=st.integers(1, 9),
       features=st.integers(1, 6), outputs=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_random_ensembles_random_elements(kind, depth, trees, features, outputs, seed):
    """Any ensemble: a random element of the whole group keeps the function, and weight matching
    brings the transformed copy back exactly."""
    gen = torch.Generator().manual_seed(seed)
    m = SoftTreeEnsemble(features, outputs, trees, depth, kind, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        m.bias.normal_(generator=gen)
    x = torch.randn(16, features, generator=gen, dtype=torch.float64)
    spec = ws.WeightSpaceSpec.from_module(m, x)
    sd = state(m)
    g = ws.random_element(spec, gen)
    b = ws.act(sd, spec, g)
    assert float((out(m, b, x) - out(m, sd, x)).abs().max()) < 1e-10
    assert moved(ws.act(b, spec, ws.weight_matching(spec, sd, b)), sd) < 1e-12


@pytest.mark.parametrize("method", ["weight-matching", "activation-matching", "merge-many"])
def test_merge_command_on_tree_ensembles(tmp_path, method):
    """`weightspace merge` aligns a tree ensemble with a transformed copy of itself: the merged
    checkpoint computes the same function."""
    from safetensors.torch import save_file

    from weightspace.cli import main
    from weightspace.io import load_checkpoint

    kwargs = {"in_features": 64, "out_features": 10, "trees": 8, "depth": 2}
    model = SoftTreeEnsemble(**kwargs).eval()
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(4, 64))
    a = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    g = ws.random_element(spec, torch.Generator().manual_seed(3))
    b = {k: v.contiguous() for k, v in ws.act(a, spec, g).items()}
    assert max((a[k] - b[k]).abs().max().item() for k in a) > 1e-3
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    rc = main(["merge", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--model",
               "weightspace.models:SoftTreeEnsemble", "--model-kwargs", json.dumps(kwargs), "--method", method,
               "--data", "digits", "--out", str(tmp_path / "m.safetensors")])
    assert rc == 0
    merged = SoftTreeEnsemble(**kwargs).eval()
    merged.load_state_dict(load_checkpoint(tmp_path / "m.safetensors"))
    x = torch.randn(16, 64)
    assert torch.allclose(merged(x), model(x), atol=1e-5)
