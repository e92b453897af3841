"""weightspace.augment: function-preserving transforms on every architecture, exact INR geometry on a
pixel grid, aligned mixup, determinism, Compose / RandomApply, noise-like transforms, validation."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import weightspace as ws
from architectures import ARCHITECTURES
from helpers import outputs, rel_err
from weightspace import augment as A
from weightspace.data.inr import render_inrs, siren_spec
from weightspace.models import SIREN

SYMMETRIES = {  # transform, does the spec have the symmetry, what the error names
    "permutation": (A.RandomPermutation, lambda s: bool(s.groups), "no permutation group"),
    "scaling": (A.RandomScaling, lambda s: any(x.positive for x in s.scalings), "no positive scaling symmetry"),
    "sign": (A.RandomSignFlip, lambda s: any(x.sign for x in s.scalings), "no sign symmetry"),
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sirens(n: int = 4, seed: int = 0) -> ws.WeightSpace:
    g = gen(seed)
    nets = []
    for _ in range(n):
        m = SIREN(2, (32, 32), 1)
        m.reset_parameters(g)
        nets.append(m.state_dict())
    return ws.WeightSpace.from_state_dicts(nets, siren_spec())


def max_diff(a: ws.WeightSpace, b: ws.WeightSpace) -> float:
    return float((a.flatten().double() - b.flatten().double()).abs().max())


# ------------------------------------------------------------------------------------ symmetries


@pytest.mark.parametrize("kind", list(SYMMETRIES))
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_function_preserving_transforms_keep_outputs_and_move_weights(arch, kind, traced_arch):
    model, x, spec = traced_arch(arch, torch.float32)
    make, present, message = SYMMETRIES[kind]
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    batch = ws.WeightSpace.from_state_dicts([sd] * 3, spec)
    if not present(spec):
        with pytest.raises(ws.SpecError, match=message):
            make()(batch, gen(1))
        return
    moved = make()(batch, gen(1))
    reference = outputs(model, x)
    for i in range(3):
        assert rel_err(reference, outputs(model, x, moved.state_dict(i))) < 1e-5
    flat, orig = moved.flatten(), batch.flatten()
    # a small symmetry (one sign-flippable neuron) leaves a network in place with probability 1/2
    assert bool((flat != orig).any(1).all()) or not _large(spec, kind), "every network must move"
    assert bool((flat != orig).any()), "the transform must move weights"
    assert not (torch.equal(flat[0], flat[1]) and torch.equal(flat[1], flat[2])), "one draw per network"


def _large(spec, kind: str) -> bool:
    """At least 8 neurons move under this kind (the identity then has probability < 1/100)."""
    if kind == "permutation":
        return sum(g.size for g in spec.groups) >= 8
    return sum(s.size for s in spec.scalings if (s.positive if kind == "scaling" else s.sign)) >= 8


def test_missing_symmetries_are_named_with_the_transform_that_applies():
    relu = ws.WeightSpaceSpec.mlp([3, 6, 2])
    w = ws.WeightSpace(relu, {p.name: torch.randn(2, *p.shape) for p in relu.params})
    with pytest.raises(ws.SpecError, match=r"no sign symmetry \(activations: relu\).*use RandomScaling"):
        A.RandomSignFlip()(w)
    with pytest.raises(ws.SpecError, match=r"no positive scaling symmetry \(activations: sin\).*use RandomSignFlip"):
        A.RandomScaling()(sirens(2))
    linear = ws.WeightSpaceSpec.mlp([3, 2])
    with pytest.raises(ws.SpecError, match="no permutation group"):
        A.RandomPermutation()(ws.WeightSpace(linear, {p.name: torch.randn(2, *p.shape) for p in linear.params}))


# ------------------------------------------------------------------------------------ INR geometry
# render_inrs: x = linspace(-1, 1, W) along columns, y along rows; on a 9 x 9 grid every coordinate is
# a multiple of 0.25 (exact in binary), one pixel is 0.25, and 90-degree turns, shifts by whole pixels
# and factors 2 / 0.5 map grid points onto grid points.

GRID = (9, 9)


def test_inr_rotation_by_quarter_turns_is_rot90_of_the_rendering():
    w = sirens(4)
    img = render_inrs(w, GRID)
    assert (img - torch.rot90(img, 1, dims=(-2, -1))).abs().max() > 0.1, "the test images must not be symmetric"
    for k in (1, 2, 3, -1):
        expected = torch.rot90(img, k, dims=(-2, -1))
        assert (render_inrs(A.rotate_inr(w, 90 * k), GRID) - expected).abs().max() < 1e-6
    drawn = A.INRRotate(degrees=(90, 90))(w, gen())
    assert (render_inrs(drawn, GRID) - torch.rot90(img, 1, dims=(-2, -1))).abs().max() < 1e-6
    # per-network angles
    per = A.rotate_inr(w, torch.tensor([90.0, 180.0, 270.0, 0.0]))
    for i, k in enumerate((1, 2, 3, 0)):
        assert (render_inrs(per[i], GRID) - torch.rot90(img[i:i + 1], k, dims=(-2, -1))).abs().max() < 1e-6


def test_inr_translation_by_whole_pixels_shifts_the_rendering():
    w = sirens(3)
    img = render_inrs(w, GRID)
    moved = render_inrs(A.translate_inr(w, (0.5, -0.25)), GRID)          # 2 pixels right, 1 pixel up
    assert (moved[..., 0:8, 2:9] - img[..., 1:9, 0:7]).abs().max() < 1e-6
    assert (moved - img).abs().max() > 0.1
    drawn = A.INRTranslate(shift=((0.5, 0.5), (-0.25, -0.25)))(w, gen())
    assert (render_inrs(drawn, GRID)[..., 0:8, 2:9] - img[..., 1:9, 0:7]).abs().max() < 1e-6


def test_inr_scaling_by_two_and_one_half_resamples_the_rendering():
    w = sirens(3)
    img = render_inrs(w, GRID)
    zoom_in = render_inrs(A.scale_inr(w, 2.0), GRID)                     # f(p / 2): every other pixel
    assert (zoom_in[..., ::2, ::2] - img[..., 2:7, 2:7]).abs().max() < 1e-6
    zoom_out = render_inrs(A.INRScale(scale=0.5)(w, gen()), GRID)        # f(2 p): the centre holds all
    assert (zoom_out[..., 2:7, 2:7] - img[..., ::2, ::2]).abs().max() < 1e-6


def test_inr_transforms_are_exact_changes_of_coordinates_for_any_network_reading_xy():
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1)).double()
    p = torch.rand(50, 2, dtype=torch.float64, generator=gen(2)) * 2 - 1
    spec = ws.WeightSpaceSpec.from_module(model, p)
    w = ws.WeightSpace.from_modules([model], spec)
    theta, t, s = 37.0, torch.tensor([0.3, -0.2], dtype=torch.float64), 1.7
    out = A.scale_inr(A.translate_inr(A.rotate_inr(w, theta), t), s)
    rad = torch.deg2rad(torch.tensor(theta, dtype=torch.float64))
    c, sn = torch.cos(rad), torch.sin(rad)
    R = torch.tensor([[c, -sn], [sn, c]], dtype=torch.float64)
    expected = model((p / s - t) @ R.T)                                  # f(R (p / s - t))
    got = functional_call(model, out.state_dict(0), (p,))
    assert (got - expected).abs().max() < 1e-12


def test_inr_transforms_name_the_first_layer_that_does_not_read_xy():
    spec = ws.WeightSpaceSpec.mlp([5, 8, 3])
    w = ws.WeightSpace(spec, {p.name: torch.randn(2, *p.shape) for p in spec.params})
    for t in (A.INRRotate(), A.INRTranslate(), A.INRScale()):
        with pytest.raises(ws.SpecError, match=r"2-D \(x, y\) coordinates.*'0.weight' has shape \(8, 5\)"):
            t(w, gen())
    with pytest.raises(ws.SpecError, match="first_layer 'layers.1.weight' has shape"):
        A.INRRotate(first_layer="layers.1.weight")(sirens(1))


# ------------------------------------------------------------------------------------ mixup


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a.name in ("mlp_relu", "siren", "tiny_transformer")],
                         ids=lambda a: a.name)
def test_matched_mixup_of_a_network_with_a_permuted_copy_returns_the_network(arch, traced_arch):
    model, _, spec = traced_arch(arch, torch.float32)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    copy = ws.act(sd, spec, ws.random_element(spec, gen(3), kinds=("permutation",)))
    w = ws.WeightSpace.from_state_dicts([sd, copy], spec)
    assert max_diff(w[0], w[1]) > 1e-3
    for alpha in (0.1, 1.0, 20.0):
        mixed, lam, partner = A.WeightMixup(alpha, align="match")(w, gen(4))
        assert partner.tolist() == [1, 0] and lam.shape == (2,) and bool(((lam > 0) & (lam < 1)).all())
        assert max_diff(mixed, w) < 1e-6


def test_mixup_pairs_along_a_cycle_and_mixes_as_documented():
    w = sirens(6)
    mixed, lam, partner = A.WeightMixup(0.5, align="none")(w, gen(5))
    assert sorted(partner.tolist()) == list(range(6)) and not bool((partner == torch.arange(6)).any())
    assert max_diff(mixed, w * lam + w[partner] * (1 - lam)) == 0.0
    copies = ws.WeightSpace.cat([w[0]] * 4)
    assert max_diff(A.WeightMixup(0.5, "none")(copies, gen(6))[0], copies) < 1e-6
    assert max_diff(A.WeightMixup(0.5, "match")(copies, gen(6))[0], copies) < 1e-6
    # a random permutation of the partner is not an alignment: it moves the weights
    assert max_diff(A.WeightMixup(0.5, "permute")(copies, gen(6))[0], copies) > 1e-2


# ------------------------------------------------------------------------------------ determinism, Compose


def _all_transforms():
    return [A.RandomPermutation(), A.RandomSignFlip(), A.GaussianNoise(0.1), A.WeightDropout((0.0, 0.3)),
            A.MagnitudeMasking((0.1, 0.5)), A.INRRotate(), A.INRTranslate(), A.INRScale(),
            A.RandomApply(A.GaussianNoise(0.1), 0.5),
            A.Compose([A.RandomPermutation(), A.RandomSignFlip(), A.INRRotate(), A.WeightDropout(0.1)]),
            A.WeightMixup(0.4, "none"), A.WeightMixup(0.4, "permute"), A.WeightMixup(0.4, "match")]


@pytest.mark.parametrize("t", _all_transforms(), ids=repr)
def test_the_same_seed_gives_the_same_batch(t):
    w = sirens(8)
    first, again, other = t(w, gen(7)), t(w, gen(7)), t(w, gen(8))
    pick = (lambda r: r[0]) if isinstance(t, A.WeightMixup) else (lambda r: r)
    assert max_diff(pick(first), pick(again)) == 0.0
    assert max_diff(pick(first), pick(other)) > 0.0
    if isinstance(t, A.WeightMixup):
        assert torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])


def test_compose_and_random_apply():
    w = sirens(64)
    t = A.GaussianNoise(0.2)
    assert A.RandomApply(t, p=0.0)(w, gen(1)) is w
    assert max_diff(A.RandomApply(t, p=1.0)(w, gen(1)), t(w, gen(1))) == 0.0
    half = A.RandomApply(t, p=0.5)(w, gen(1))
    moved = (half.flatten() != w.flatten()).any(1)
    assert 15 < int(moved.sum()) < 50, "one coin per network"
    assert torch.equal(half.flatten()[~moved], w.flatten()[~moved])
    a, b = A.RandomPermutation(), A.INRRotate()
    g1, g2 = gen(2), gen(2)
    assert max_diff(A.Compose([a, b])(w, g1), b(a(w, g2), g2)) == 0.0
    assert A.Compose([])(w) is w
    with pytest.raises(TypeError, match="WeightMixup returns"):
        A.Compose([a, A.WeightMixup()])
    with pytest.raises(TypeError, match="WeightSpace batch"):
        a(w.state_dict(0))


# ------------------------------------------------------------------------------------ noise-like transforms


def test_noise_dropout_and_masking_act_per_tensor_on_parameters_only(traced_arch):
    arch = next(a for a in ARCHITECTURES if a.name == "vgg_bn")
    model, _, spec = traced_arch(arch, torch.float32)
    w = ws.WeightSpace.from_state_dicts([model.state_dict()] * 4, spec)
    params = [p.name for p in spec.params if p.role == "parameter"]
    others = [p.name for p in spec.params if p.role != "parameter"]
    assert others, "vgg_bn has BatchNorm statistics"
    for t in (A.GaussianNoise(0.1), A.WeightDropout(0.3), A.MagnitudeMasking(0.3)):
        out = t(w, gen(1))
        assert all(torch.equal(out[n], w[n]) for n in others), f"{t!r} changed statistics or buffers"
        assert any(not torch.equal(out[n], w[n]) for n in params)
    big = next(n for n in params if spec[n].numel >= 500)
    noisy = A.GaussianNoise(0.1)(w, gen(2))
    ratio = ((noisy[big] - w[big]).pow(2).mean() / w[big].pow(2).mean()).sqrt()
    assert 0.09 < float(ratio) < 0.11, "relative noise: 10% of each tensor's RMS"
    absolute = A.GaussianNoise(0.01, relative=False)(w, gen(2))
    assert 0.009 < float((absolute[big] - w[big]).std()) < 0.011
    dropped = A.WeightDropout(0.3)(w, gen(3))
    assert 0.27 < float((dropped[big] == 0).float().mean()) < 0.33
    masked = A.MagnitudeMasking(0.3)(w, gen(4))[big].reshape(4, -1)
    k = int(0.3 * spec[big].numel)
    orig = w[big].reshape(4, -1).abs()
    assert ((masked == 0).sum(1) == k).all()
    assert bool((orig[masked == 0].max() <= orig[masked != 0].min()))


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="p must be < 1"):
        A.WeightDropout(1.0)
    with pytest.raises(ValueError, match="std must be >= 0"):
        A.GaussianNoise(-0.1)
    with pytest.raises(ValueError, match="q must be <= 1"):
        A.MagnitudeMasking(1.5)
    with pytest.raises(ValueError, match="align must be one of"):
        A.WeightMixup(1.0, align="sinkhorn")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        A.WeightMixup(0.0)
    with pytest.raises(ValueError, match=r"must be > 0"):
        A.RandomScaling(0.0, 2.0)
    with pytest.raises(ValueError, match="low <= high"):
        A.INRRotate((30, 10))
    with pytest.raises(TypeError, match="number or a \\(low, high\\) pair"):
        A.INRScale("big")
    with pytest.raises(ValueError, match="p must be"):
        A.RandomApply(A.RandomPermutation(), p=1.5)
