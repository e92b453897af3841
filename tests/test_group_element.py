"""Typed group elements, actions on features with any leading dims, the one "where groups act"
query, and the public equivariance checks of ``weightspace.testing``."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import weightspace as ws
from architectures import ARCHITECTURES
from helpers import changed, outputs, rel_err
from weightspace.testing import assert_equivariant, assert_invariant

TOL = 1e-10


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_random_element_keeps_function_and_moves_weights(arch, traced_arch):
    model, x, spec = traced_arch(arch)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    g = ws.random_element(spec, generator=torch.Generator().manual_seed(5))
    moved = ws.act(sd, spec, g)
    assert changed(sd, moved), "a random group element must move weights"
    assert rel_err(outputs(model, x), outputs(model, x, moved)) < TOL


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_inverse_and_compose_are_exact(arch, traced_arch):
    model, x, spec = traced_arch(arch)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(6)
    g, h = ws.random_element(spec, gen), ws.random_element(spec, gen)
    gsd = ws.act(sd, spec, g)
    assert _max_diff(ws.act(gsd, spec, g.inverse()), sd) < 1e-12
    assert _max_diff(ws.act(sd, spec, g.compose(h)), ws.act(gsd, spec, h)) < 1e-12
    # composing with the inverse gives the identity, which moves nothing
    assert _max_diff(ws.act(sd, spec, g.compose(g.inverse())), sd) < 1e-12
    # the composite is itself a symmetry
    assert rel_err(outputs(model, x), outputs(model, x, ws.act(sd, spec, h.compose(g)))) < TOL


def test_per_network_elements_on_a_weightspace(traced_arch):
    arch = next(a for a in ARCHITECTURES if a.name == "resnet20")
    model, x, spec = traced_arch(arch)
    sds = [{k: v.clone() for k, v in model.state_dict().items()} for _ in range(3)]
    w = ws.WeightSpace.from_state_dicts(sds, spec)
    g = ws.random_element(spec, torch.Generator().manual_seed(7), batch_size=3)
    assert g.batch_size == 3
    moved = ws.act(w, spec, g)
    assert isinstance(moved, ws.WeightSpace)
    for i in range(3):
        one = ws.act(sds[i], spec, g[i])
        assert _max_diff(moved.state_dict(i), one) == 0.0
    assert not torch.equal(moved.flatten()[0], moved.flatten()[1]), "each network gets its own element"
    assert _max_diff(ws.act(moved, spec, g.inverse()).state_dict(2), sds[2]) < 1e-12


def test_act_accepts_the_permutation_dict_of_random_permutation_and_weight_matching():
    spec = ws.WeightSpaceSpec.mlp([3, 5, 4, 2])
    gen = torch.Generator().manual_seed(0)
    sd = {p.name: torch.randn(p.shape, generator=gen) for p in spec.params}
    perms = ws.random_permutation(spec, generator=gen)
    assert _max_diff(ws.act(sd, spec, perms), ws.permute(sd, spec, perms)) == 0.0
    found = ws.weight_matching(spec, sd, ws.permute(sd, spec, perms))
    assert _max_diff(ws.act(ws.permute(sd, spec, perms), spec, found), sd) < 1e-6
    with pytest.raises(ws.SpecError, match="GroupElement or a dict of permutations"):
        ws.act(sd, spec, [1, 2, 3])
    with pytest.raises(ws.SpecError, match="unknown symmetry kind"):
        ws.random_element(spec, kinds=("rotation",))


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a.name in ("mlp_norms", "resnet20", "vit", "densenet",
                                                                          "recurrent", "mixer")], ids=lambda a: a.name)
def test_actions_on_channel_features_equal_acting_on_each_channel(arch, traced_arch):
    _, _, spec = traced_arch(arch)
    gen = torch.Generator().manual_seed(8)
    b, c = 2, 3
    feats = {p.name: torch.randn(b, c, *p.shape, generator=gen, dtype=torch.float64)
             for p in spec.params if p.in_weight_space}  # learned-on entries only, no plain buffers
    perms = ws.random_permutation(spec, generator=gen, batch_size=b)
    g = ws.random_element(spec, gen, batch_size=b)
    out_p, out_g = ws.permute(feats, spec, perms), ws.act(feats, spec, g)
    assert set(out_p) == set(feats)
    for ch in range(c):
        per = {k: v[:, ch] for k, v in feats.items()}
        assert _max_diff({k: v[:, ch] for k, v in out_p.items()}, ws.permute(per, spec, perms)) == 0.0
        assert _max_diff({k: v[:, ch] for k, v in out_g.items()}, ws.act(per, spec, g)) < 1e-14
    assert changed(feats, out_p)


def test_features_with_inconsistent_leading_dims_are_refused():
    spec = ws.WeightSpaceSpec.mlp([3, 5, 2])
    feats = {p.name: torch.zeros(2, 4, *p.shape) for p in spec.params}
    feats["2.bias"] = torch.zeros(2, 5, 2)
    with pytest.raises(ws.SpecError, match="2.bias.*leading dims"):
        ws.permute(feats, spec, ws.random_permutation(spec))
    feats["2.bias"] = torch.zeros(2, 4, 3)
    with pytest.raises(ws.SpecError, match="2.bias.*shape"):
        ws.permute(feats, spec, ws.random_permutation(spec))


def test_where_groups_act_is_one_cached_query_beside_the_spec():
    spec = ws.WeightSpaceSpec.mlp([3, 5, 4, 2])
    blocks = spec.blocks()
    assert blocks is spec.blocks()
    assert {(b.param, b.axis, b.offset, b.size, b.inner) for b in spec.group_slices("0")} == {
        ("0.weight", 0, 0, 5, 1), ("0.bias", 0, 0, 5, 1), ("2.weight", 1, 0, 5, 1)}
    assert next(b for b in spec.group_slices("0") if b.param == "2.weight").others == frozenset({"2"})
    assert [a.from_right for a in spec.axis_actions("2.weight")] == [-2, -1]
    ws.permute({p.name: torch.zeros(p.shape) for p in spec.params}, spec, ws.random_permutation(spec))
    assert "_cache" not in spec.__dict__ and not any(k.endswith("plan") for k in spec.__dict__)


def test_head_structure_is_explicit_in_the_forest(traced_arch):
    arch = next(a for a in ARCHITECTURES if a.name == "hand_attention")
    _, _, spec = traced_arch(arch)
    forest = spec.group_forest()
    heads = [g for g in spec.groups if g.heads is not None]
    assert heads
    for g in heads:
        parent, block = g.heads
        assert (g.name, block) in forest.children[parent]
        assert forest.order.index(parent) < forest.order.index(g.name)
        assert g.name not in forest.roots


# ------------------------------------------------------------------------------------ weightspace.testing


def _mlp_and_weights():
    spec = ws.WeightSpaceSpec.mlp([3, 6, 5, 2])
    gen = torch.Generator().manual_seed(1)
    w = ws.WeightSpace(spec, {p.name: torch.randn(2, *p.shape, generator=gen, dtype=torch.float64)
                              for p in spec.params})
    return spec, w


def test_assert_equivariant_passes_on_the_actions_themselves_and_elementwise_maps():
    spec, w = _mlp_and_weights()
    fixed = ws.random_permutation(spec, generator=torch.Generator().manual_seed(3))
    # scalar multiples commute with every element (the action is linear) ...
    report = assert_equivariant(lambda v: 2.0 * v, spec, w)
    assert report.worst_error < 1e-12 and report.input_moved > 0.1 and not report.constant
    # ... permuting by a fixed element and back is the identity ...
    assert_equivariant(lambda v: ws.permute(ws.permute(v, spec, fixed), spec, ws.invert_permutation(fixed)), spec, w)
    # ... and elementwise maps commute with permutations (not with scalings)
    assert_equivariant(lambda v: v.map(torch.tanh), spec, w, kinds=("permutation",))
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda v: v.map(torch.tanh), spec, w, kinds=("scaling",))


def test_assert_equivariant_fails_on_a_non_equivariant_function():
    spec, w = _mlp_and_weights()

    def mixes_neurons(v):  # rolls hidden neurons: depends on their order
        return v.map(lambda t: torch.roll(t, 1, dims=1) if t.dim() > 1 else t)

    with pytest.raises(AssertionError, match="not equivariant: worst relative error"):
        assert_equivariant(mixes_neurons, spec, w, kinds=("permutation",))
    with pytest.raises(AssertionError, match="constant"):
        assert_equivariant(lambda v: v * 0.0, spec, w)


def test_assert_invariant_on_a_networks_function_and_its_failures(traced_arch):
    arch = next(a for a in ARCHITECTURES if a.name == "vgg_bn")
    model, x, spec = traced_arch(arch)
    sd = {k: v.clone() for k, v in model.state_dict().items()}

    def run(state):
        with torch.no_grad():
            return functional_call(model, state, x)

    report = assert_invariant(run, spec, sd)
    assert report.worst_error < 1e-10 and report.input_moved > 0
    first = spec.params[0].name
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda s: s[first].flatten()[:5], spec, sd)
    no_symmetry = ws.WeightSpaceSpec.mlp([3, 2])
    with pytest.raises(AssertionError, match="no random group element moved"):
        assert_invariant(lambda s: s["0.weight"].sum(), no_symmetry, {p.name: torch.randn(p.shape)
                                                                        for p in no_symmetry.params})


def test_a_new_kind_of_symmetry_plugs_into_group_elements():
    """A registered kind is drawn, applied, inverted and composed with the built-in ones. The toy kind
    negates both layers of a bias-free linear network (``(-W2)(-W1) x = W2 W1 x``); a permutation of
    the hidden neurons leaves its value alone."""
    from weightspace.symmetry import KINDS, SymmetryKind, register_kind

    class Negate(SymmetryKind):
        name = "negate"

        def random(self, spec, generator, batch_size, **options):
            lead = () if batch_size is None else (batch_size,)
            return {"all": torch.randint(0, 2, (*lead, 1), generator=generator).double() * 2 - 1}

        def check(self, spec, values):
            return {k: torch.as_tensor(v) for k, v in values.items()}

        def apply(self, params, spec, values):       # one network's state dict, for this test
            return {k: v * values["all"].reshape(()) for k, v in params.items()}

        def inverse(self, spec, values):
            return values

        def combine(self, spec, first, second):
            if not first or not second:
                return dict(first or second)
            return {"all": first["all"] * second["all"]}

        def relabel(self, spec, values, perms):
            return values

    spec = ws.WeightSpaceSpec.mlp([3, 4, 2], activation=None, bias=False)
    sd = {p.name: torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
          for p in spec.params}
    register_kind(Negate())
    try:
        gen = torch.Generator().manual_seed(0)
        g = ws.random_element(spec, gen, kinds=("permutation", "negate"))
        while float(g.parts["negate"]["all"]) > 0:
            g = ws.random_element(spec, gen, kinds=("permutation", "negate"))
        moved = ws.act(sd, spec, g)
        x = torch.randn(5, 3, dtype=torch.float64)
        first, second = spec.weight_names
        assert torch.allclose(x @ sd[first].T @ sd[second].T, x @ moved[first].T @ moved[second].T)
        assert changed(sd, moved)
        assert _max_diff(ws.act(moved, spec, g.inverse()), sd) < 1e-12
        h = ws.random_element(spec, gen, kinds=("permutation", "negate"))
        assert _max_diff(ws.act(sd, spec, g.compose(h)), ws.act(moved, spec, h)) < 1e-12
    finally:
        KINDS.pop("negate")
