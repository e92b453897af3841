"""Equivariant weight-space layers: equivariance on many architectures, basis counts against the
published formula and brute-force orbit counts, expressivity against group averaging, training."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import weightspace as ws
from architectures import ARCHITECTURES
from weightspace.nn import UNF, EquivariantLinear, FlatMLP, InvariantPool, WeightSpaceFeatures
from weightspace.testing import assert_equivariant, assert_invariant

PERM = ("permutation",)


def _features(spec, b=2, c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return WeightSpaceFeatures(spec, {n: torch.randn(b, c, *spec[n].shape, generator=g, dtype=torch.float64)
                                      for n in spec.weight_names})


def _weights(spec, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ws.WeightSpace(spec, {p.name: torch.randn(b, *p.shape, generator=g, dtype=torch.float64)
                                 for p in spec.params})


LISTED = ("siren", "vgg_bn", "resnet20", "bottleneck", "densenet", "mobile", "transformer_pre", "hand_attention",
          "fused_qkv_chunk", "recurrent", "mixer", "unet")


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a.name in LISTED], ids=lambda a: a.name)
def test_equivariant_linear_on_traced_architectures(arch, traced_arch):
    _, _, spec = traced_arch(arch)
    layer = EquivariantLinear(spec, 2, 3).double()
    report = assert_equivariant(layer, spec, _features(spec), kinds=PERM, trials=1, rtol=1e-8)
    assert report.output_variation > 1e-3 and report.input_moved > 0


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a.name in ("siren", "vgg_bn", "tiny_transformer")],
                         ids=lambda a: a.name)
def test_unf_heads_are_invariant_and_equivariant(arch, traced_arch):
    _, _, spec = traced_arch(arch)
    w = _weights(spec)
    inv = UNF(spec, channels=(4, 4), out_features=3).double()
    assert_invariant(inv, spec, w, kinds=PERM, trials=2, rtol=1e-8)
    eq = UNF(spec, channels=(4,), out_features=None).double()
    assert_equivariant(eq, spec, w, kinds=PERM, trials=2, rtol=1e-8)
    pool = InvariantPool(spec)
    assert_invariant(pool, spec, _features(spec), kinds=PERM, rtol=1e-8)


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 5), min_size=2, max_size=5), bias=st.booleans())
def test_equivariance_on_drawn_mlps(widths, bias):
    spec = ws.WeightSpaceSpec.mlp(widths, bias=bias)
    if not any(g.size > 1 for g in spec.groups):
        return
    layer = EquivariantLinear(spec, 2, 2).double()
    assert_equivariant(layer, spec, _features(spec), kinds=PERM, trials=2, rtol=1e-8)


@settings(max_examples=6, deadline=None)
@given(chans=st.lists(st.integers(2, 4), min_size=1, max_size=3), k=st.sampled_from([1, 3]),
       pool=st.booleans())
def test_equivariance_on_drawn_cnns(chans, k, pool):
    layers, prev = [], 3
    for c in chans:
        layers += [torch.nn.Conv2d(prev, c, k, padding=k // 2), torch.nn.ReLU()]
        prev = c
    layers += [torch.nn.AdaptiveAvgPool2d(1) if pool else torch.nn.Identity(), torch.nn.Flatten(),
               torch.nn.Linear(prev * (1 if pool else 16), 2)]
    model = torch.nn.Sequential(*layers).double()
    spec = ws.WeightSpaceSpec.from_module(model, torch.randn(1, 3, 4, 4, dtype=torch.float64))
    layer = EquivariantLinear(spec, 1, 2).double()
    assert_equivariant(layer, spec, _features(spec, c=1), kinds=PERM, trials=2, rtol=1e-8)


# ------------------------------------------------------------------------------------ basis counts


def _bell(n: int) -> int:
    row = [1]
    for _ in range(n):
        nxt = [row[-1]]
        for x in row:
            nxt.append(nxt[-1] + x)
        row = nxt
    return row[0]


def test_basis_count_on_mlps_matches_the_closed_form():
    """With hidden widths >= 4 (no orbit is empty), the number of independent coefficients of an
    equivariant linear map between tensors ``O`` and ``I`` is ``F_O * F_I * prod_g Bell(k_g)`` where
    ``k_g`` counts the axes of ``O`` and ``I`` that hidden group ``g`` acts on and ``F`` the fixed
    entries (input / output neurons); biases add ``F_O * prod_g Bell(k_g(O))`` per output tensor
    (UNF, Zhou et al. 2024, eq. 8; for the MLP layer this is the NFN / DWSNets HNP count)."""
    widths = [3, 4, 5, 4, 2]
    spec = ws.WeightSpaceSpec.mlp(widths)
    axes = {p.name: [lay[0].group if lay else None for lay in p.axes] for p in spec.params}

    def fixed(name):
        return math.prod(n for n, g in zip(spec[name].shape, axes[name]) if g is None)

    def count(*names):
        groups = [g for n in names for g in axes[n] if g is not None]
        return math.prod(_bell(groups.count(g)) for g in set(groups))

    expected = sum(fixed(o) * fixed(i) * count(o, i) for o in spec.weight_names for i in spec.weight_names)
    expected += sum(fixed(o) * count(o) for o in spec.weight_names)
    layer = EquivariantLinear(spec, 1, 1)
    assert sum(p.numel() for p in layer.parameters()) == expected


def _all_elements(spec):
    """Every element of a tiny spec's group, enumerated (roots: all permutations; head children:
    their parent's blocks, times every within-head permutation)."""
    forest = spec.group_forest()
    choices: list[dict] = [{}]
    for name in forest.order:
        g = spec.group(name)
        nxt = []
        for partial in choices:
            if g.heads is None:
                opts = [torch.tensor(p) for p in itertools.permutations(range(g.size))]
            else:
                parent, block = g.heads
                sigma = partial[parent]
                within = list(itertools.permutations(range(block)))
                opts = [torch.cat([sigma[h] * block + torch.tensor(taus[h]) for h in range(len(sigma))])
                        for taus in itertools.product(within, repeat=len(sigma))]
            nxt.extend({**partial, name: p} for p in opts)
        choices = nxt
    return choices


def _index_maps(spec):
    """Per group element, the permutation of the flat weight vector it induces."""
    flat = {}
    off = 0
    for n in spec.weight_names:
        flat[n] = torch.arange(off, off + spec[n].numel).reshape(spec[n].shape)
        off += spec[n].numel
    maps = []
    for perms in _all_elements(spec):
        moved = ws.permute(flat, spec, perms)
        maps.append(torch.cat([moved[n].flatten() for n in spec.weight_names]))
    return torch.stack(maps), off


def _orbit_count(maps: torch.Tensor, p: int) -> tuple[int, int]:
    """Orbits of the group on index pairs and on single indices (canonical representative: the
    smallest image over the group)."""
    i, j = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    pair = (maps[:, i.flatten()] * p + maps[:, j.flatten()]).min(0).values
    single = maps.min(0).values
    return len(pair.unique()), len(single.unique())


def _head_spec():
    """Two heads of 2 query/key neurons and 1 value neuron, a within-group of 2 and a concatenation."""
    shapes = {"q.weight": (4, 2), "k.weight": (4, 2), "v.weight": (2, 2), "o.weight": (2, 2), "o.bias": (2,),
              "f.weight": (3, 2), "cat.weight": (1, 5)}
    axes = {"q.weight": ("qk", None), "k.weight": ("qk", None), "v.weight": ("vo", None), "o.weight": (None, "vo"),
            "o.bias": (None,), "f.weight": ("h", None), "cat.weight": (None, [("h", 3), (None, 2)])}
    return ws.WeightSpaceSpec.from_axes(axes, shapes, heads={"qk": ("H", 2), "vo": ("H", 1)})


@pytest.mark.parametrize("spec", [ws.WeightSpaceSpec.mlp([2, 2, 3, 1]), ws.WeightSpaceSpec.mlp([1, 3, 1]),
                                  _head_spec()], ids=["mlp-2-2-3-1", "mlp-1-3-1", "heads"])
def test_basis_count_equals_brute_force_orbit_count(spec):
    maps, p = _index_maps(spec)
    pairs, singles = _orbit_count(maps, p)
    layer = EquivariantLinear(spec, 1, 1, bias=True)
    assert sum(w.numel() for w in layer.parameters()) == pairs + singles
    assert sum(w.numel() for w in EquivariantLinear(spec, 1, 1, bias=False).parameters()) == pairs


def _dense(layer, spec):
    """The layer's matrix ``[P, P]`` (one channel, no bias), by applying it to unit vectors."""
    p = sum(spec[n].numel for n in spec.weight_names)
    eye = torch.eye(p, dtype=torch.float64)
    cols, off = {}, 0
    for n in spec.weight_names:
        cols[n] = eye[:, off:off + spec[n].numel].reshape(p, 1, *spec[n].shape)
        off += spec[n].numel
    out = layer(WeightSpaceFeatures(spec, cols))
    return torch.cat([out[n].reshape(p, -1) for n in spec.weight_names], 1).T


def test_layer_spans_exactly_the_projection_of_dense_maps():
    """Group averaging of a random dense map (by enumeration) lands in the layer's span, and the
    span has the dimension of the equivariant subspace (the basis is complete and independent)."""
    spec = _head_spec()
    maps, p = _index_maps(spec)
    layer = EquivariantLinear(spec, 1, 1, bias=False).double()
    params = list(layer.parameters())
    basis = []
    with torch.no_grad():
        for w in params:
            w.zero_()
        for w in params:
            for k in range(w.numel()):
                w.view(-1)[k] = 1.0
                basis.append(_dense(layer, spec).flatten())
                w.view(-1)[k] = 0.0
    basis = torch.stack(basis, 1)                      # [P*P, K]
    assert torch.linalg.matrix_rank(basis) == basis.shape[1]
    a = torch.randn(p, p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    proj = torch.zeros_like(a)
    for m in maps:                                     # (P_g A P_g^-1)[m[i], m[j]] = A[i, j]
        proj[m[:, None], m[None, :]] += a
    proj /= len(maps)
    coef = torch.linalg.lstsq(basis, proj.flatten()).solution
    assert (basis @ coef - proj.flatten()).abs().max() < 1e-10
    # and a random map of the layer is its own projection (it is equivariant)
    rand = basis @ torch.randn(basis.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rand = rand.reshape(p, p)
    back = torch.zeros_like(rand)
    for m in maps:
        back[m[:, None], m[None, :]] += rand
    assert (back / len(maps) - rand).abs().max() < 1e-10


# ------------------------------------------------------------------------------------ training, errors


def test_gradients_reach_every_parameter(traced_arch):
    arch = next(a for a in ARCHITECTURES if a.name == "hand_attention")
    _, _, spec = traced_arch(arch)
    model = UNF(spec, channels=(3, 3), out_features=2).double()
    model(_weights(spec)).square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_small_unf_overfits_64_siren_weight_sets():
    from weightspace.models import SIREN

    net = SIREN(2, (32, 32), 1)
    spec = ws.WeightSpaceSpec.from_module(net, torch.zeros(1, 2))
    gen = torch.Generator().manual_seed(0)
    sds = []
    for i in range(64):
        net.reset_parameters(torch.Generator().manual_seed(i))
        sds.append({k: v.clone() for k, v in net.state_dict().items()})
    w = ws.WeightSpace.from_state_dicts(sds, spec)
    y = torch.randint(0, 4, (64,), generator=gen)
    torch.manual_seed(0)
    model = UNF(spec, channels=(8, 8), out_features=4, norm=ws.normalization_stats(w))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(w), y)
        loss.backward()
        opt.step()
        if (model(w).argmax(1) == y).all():
            break
    assert (model(w).argmax(1) == y).float().mean() == 1.0


def test_bad_inputs_are_refused_with_the_difference_named():
    spec = ws.WeightSpaceSpec.mlp([2, 4, 1])
    other = ws.WeightSpaceSpec.mlp([2, 5, 1])
    with pytest.raises(ws.SpecError, match="0.weight"):
        UNF(spec)(_weights(other).to(torch.float32))
    with pytest.raises(ws.SpecError, match="expects 2 channels"):
        EquivariantLinear(spec, 2, 2)(WeightSpaceFeatures.from_weightspace(_weights(spec)))
    with pytest.raises(ws.SpecError, match="mode='element'"):
        UNF(spec, norm=ws.normalization_stats(_weights(spec), mode="element"))
    assert FlatMLP(spec)(_weights(spec).to(torch.float32)).shape == (2, 10)


def test_features_round_trip_and_arithmetic():
    spec = ws.WeightSpaceSpec.mlp([2, 4, 1])
    w = _weights(spec)
    f = WeightSpaceFeatures.from_weightspace(w)
    assert f.channels == 1 and f.batch_size == 2
    back = f.to_weightspace(w)
    assert all(torch.equal(back[n], w[n]) for n in spec.names)
    g = (f * 2 + f).cat(f.map(torch.tanh))
    assert g.channels == 2 and torch.allclose(g["0.weight"][:, 0], 3 * w["0.weight"])
    with pytest.raises(ws.SpecError, match="one channel"):
        g.to_weightspace()


# ------------------------------------------------------------------------------------ NFN (NP / HNP)


def test_np_spec_count_matches_the_closed_form_and_is_smaller_than_hnp():
    """NP (DWSNets / NFN): every neuron set, input and output included, is its own symmetric group,
    so with all widths >= 4 the count is ``sum_{O, I} prod_g Bell(k_g(O, I)) + sum_O prod_g Bell(k_g(O))``
    (no fixed entries); HNP keeps input and output fixed and has more coefficients."""
    from weightspace.nn import io_permutable

    spec = ws.WeightSpaceSpec.mlp([4, 5, 4, 6])
    nps = io_permutable(spec)
    axes = {p.name: [lay[0].group if lay else None for lay in p.axes] for p in nps.params}
    assert all(g is not None for a in axes.values() for g in a)

    def count(*names):
        groups = [g for n in names for g in axes[n]]
        return math.prod(_bell(groups.count(g)) for g in set(groups))

    expected = sum(count(o, i) for o in nps.weight_names for i in nps.weight_names)
    expected += sum(count(o) for o in nps.weight_names)
    np_params = sum(p.numel() for p in EquivariantLinear(nps, 1, 1).parameters())
    hnp_params = sum(p.numel() for p in EquivariantLinear(spec, 1, 1).parameters())
    assert np_params == expected < hnp_params


@pytest.mark.parametrize("mode", ["np", "hnp"])
def test_nfn_models_on_siren_and_cnn(mode, traced_arch):
    from weightspace.nn import NFN

    for name in ("siren", "small_cnn"):
        _, _, spec = traced_arch(next(a for a in ARCHITECTURES if a.name == name))
        w = _weights(spec)
        assert_invariant(NFN(spec, (3, 3), 2, mode=mode, fourier=2).double(), spec, w, kinds=PERM, trials=2)
        assert_equivariant(NFN(spec, (3,), None, mode=mode).double(), spec, w, kinds=PERM, trials=2)


def test_nfn_refuses_what_it_cannot_express(traced_arch):
    from weightspace.nn import NFN

    _, _, spec = traced_arch(next(a for a in ARCHITECTURES if a.name == "resnet20"))
    with pytest.raises(ws.SpecError, match="use weightspace.nn.UNF|Use weightspace.nn.UNF"):
        NFN(spec, mode="np")
    with pytest.raises(ValueError, match="io_embed"):
        NFN(ws.WeightSpaceSpec.mlp([2, 4, 1]), mode="hnp", io_embed=True)


# ------------------------------------------------------------------------------------ fused path (speed)


def _fused_specs():
    from weightspace.nn import io_permutable

    mlp = ws.WeightSpaceSpec.mlp([3, 4, 5, 2])
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 2), torch.nn.ReLU(), torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(8, 2)).double()
    cnn = ws.WeightSpaceSpec.from_module(conv, torch.zeros(1, 1, 3, 3, dtype=torch.float64))
    return {"mlp-hnp": mlp, "mlp-np": io_permutable(mlp), "cnn-hnp": cnn}


@pytest.mark.parametrize("name", ["mlp-hnp", "mlp-np", "cnn-hnp"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_fused_layer_passes_gradcheck(name, activation):
    """The fused node's hand-written backward (float64): inputs and coefficients, with the in-place ReLU."""
    spec = _fused_specs()[name]
    torch.manual_seed(0)
    layer = EquivariantLinear(spec, 2, 2, activation=activation).double()
    assert layer._fused is not None
    names = spec.weight_names
    params = dict(layer.named_parameters())
    xs = [t.requires_grad_() for t in _features(spec, b=2, c=2, seed=3).tensors.values()]

    def fn(*args):
        x, p = args[:len(names)], dict(zip(params, args[len(names):]))
        out = torch.func.functional_call(layer, p, (WeightSpaceFeatures(spec, dict(zip(names, x))),))
        return tuple(out.tensors.values())

    ps = [p.detach().clone().requires_grad_() for p in params.values()]
    assert torch.autograd.gradcheck(fn, (*xs, *ps), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@settings(max_examples=8, deadline=None)
@given(widths=st.lists(st.integers(1, 5), min_size=2, max_size=4), bias=st.booleans(),
       cin=st.sampled_from([1, 3]), activation=st.sampled_from([None, "relu"]), np_mode=st.booleans(),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_fused_and_autograd_paths_agree(widths, bias, cin, activation, np_mode, dtype):
    """Outputs and every gradient of the fused node equal the autograd path's (float32 runs the
    products as oneDNN 1x1 convolutions, float64 as matmul)."""
    from weightspace.nn import io_permutable

    spec = ws.WeightSpaceSpec.mlp(widths, bias=bias)
    spec = io_permutable(spec) if np_mode else spec
    torch.manual_seed(0)
    fused = EquivariantLinear(spec, cin, 3, activation=activation).to(dtype)
    plain = EquivariantLinear(spec, cin, 3, activation=activation, fused=False).to(dtype)
    plain.load_state_dict(fused.state_dict())
    assert fused._fused is not None and plain._fused is None
    x = {n: t.to(dtype).requires_grad_() for n, t in _features(spec, b=3, c=cin).tensors.items()}
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    grads = []
    for layer in (fused, plain):
        out = layer(WeightSpaceFeatures(spec, x))
        loss = sum((t * torch.cos(t)).sum() for t in out.tensors.values())
        grads.append((out, torch.autograd.grad(loss, [*x.values(), *layer.parameters()])))
    (out_f, g_f), (out_p, g_p) = grads
    for n in spec.weight_names:
        assert (out_f[n] - out_p[n]).abs().max() <= tol * (1 + out_p[n].abs().max())
    for a, b in zip(g_f, g_p):
        assert (a - b).abs().max() <= tol * (1 + b.abs().max())


def test_channel_mix_convolution_equals_matmul():
    from weightspace.nn.mixing import channel_mix, channel_mix_backward, uses_conv

    g = torch.Generator().manual_seed(0)
    for shape in [(4, 8, 8, 16), (3, 16), (2, 5, 7)]:
        z = torch.randn(*shape, generator=g)
        w = torch.randn(6, shape[-1], generator=g)
        assert uses_conv(z) == (torch.backends.mkldnn.is_available() and len(shape) > 2)
        assert not uses_conv(z.double())
        y = channel_mix(z, w)
        assert y.shape == (*shape[:-1], 6) and y.is_contiguous()
        assert torch.allclose(y.double(), z.double() @ w.double().t(), atol=1e-4)
        gy = torch.randn(*y.shape, generator=g)
        gz, gw = channel_mix_backward(gy, z, w, True, True)
        assert torch.allclose(gz.double(), gy.double() @ w.double(), atol=1e-4)
        assert torch.allclose(gw.double(), gy.double().reshape(-1, 6).t() @ z.double().reshape(-1, shape[-1]),
                              atol=1e-3)


def test_fused_path_covers_nfn_specs_and_diagonal_specs_fall_back(traced_arch):
    """Every spec whose terms need no diagonal (MLPs, CNNs, ResNets, Transformers) takes the fused
    node; a recurrent cell (``W_hh``: both axes on one group) takes the autograd path, ReLU included."""
    from weightspace.nn import io_permutable

    for name in ("resnet20", "tiny_transformer", "siren"):
        _, _, spec = traced_arch(next(a for a in ARCHITECTURES if a.name == name))
        assert EquivariantLinear(spec, 1, 2)._fused is not None
    assert EquivariantLinear(io_permutable(spec), 1, 2)._fused is not None       # SIREN, NP
    _, _, rnn = traced_arch(next(a for a in ARCHITECTURES if a.name == "recurrent"))
    layer = EquivariantLinear(rnn, 2, 2, activation="relu").double()
    assert layer._fused is None
    report = assert_equivariant(layer, rnn, _features(rnn), kinds=PERM, trials=1, rtol=1e-8)
    assert report.output_variation > 1e-3
    x = _features(rnn)
    plain = EquivariantLinear(rnn, 2, 2).double()
    plain.load_state_dict(layer.state_dict())
    assert all(torch.equal(layer(x)[n], torch.relu(plain(x)[n])) for n in rnn.weight_names)
    with pytest.raises(ValueError, match="Pointwise"):
        EquivariantLinear(spec, 1, 2, activation="tanh")


def test_layer_trains_under_bf16_autocast():
    """Under autocast the layer takes the autograd path (per-op casts), so bf16 training works."""
    spec = ws.WeightSpaceSpec.mlp([3, 8, 2])
    layer = EquivariantLinear(spec, 2, 4, activation="relu")
    x = _features(spec, b=4, c=2).to(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        loss = sum(t.float().square().sum() for t in out.tensors.values())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in layer.parameters())
