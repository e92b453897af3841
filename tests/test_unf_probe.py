"""UNF with probe features (``UNF(..., probe=S)``): each entry's channels carry the probe values of
the neurons it connects, which move with the weights, so the model stays invariant; the output
neuron's values (the function at the probes) reach the head."""
from __future__ import annotations

import pytest
import torch
from architectures import ARCHITECTURES
from test_batched_probe import _batch, siren_batch

import weightspace as ws
from weightspace.nn import UNF
from weightspace.nn.probe import ProbeChannels, entry_neurons
from weightspace.symmetry import random_element

CASES = [a for a in ARCHITECTURES if a.name in ("mlp_relu", "siren", "small_cnn", "vgg_bn")]


def _probes(x, s: int, g) -> torch.Tensor:
    x = x[0] if isinstance(x, tuple) else x
    return x.repeat(s, *[1] * (x.dim() - 1))[:s] + 0.5 * torch.randn(s, *x.shape[1:], generator=g, dtype=x.dtype)


@pytest.mark.parametrize("arch", CASES, ids=lambda a: a.name)
def test_unf_with_probe_features_is_invariant_and_reads_them(arch, traced_arch):
    model, x, spec = traced_arch(arch, torch.float64)
    g = torch.Generator().manual_seed(0)
    w = _batch(model, spec, 3, g)
    probes = _probes(x, 4, g)
    unf = UNF(spec, channels=(4, 4), out_features=3, probe=4).double().probe_with(model, probes).eval()
    y = unf(w)
    kinds = ("permutation", "sign") if arch.name == "siren" else ("permutation",)
    elem = random_element(spec, g, batch_size=3, kinds=kinds)
    moved = elem.act(w)
    assert (moved.flatten() - w.flatten()).abs().max() > 1e-3            # the weights did move
    if arch.name != "siren":                                              # sign flips change probe values
        assert torch.allclose(unf(moved), y, rtol=1e-6, atol=1e-6), float((unf(moved) - y).abs().max())
    assert y.std(0).max() > 1e-6                                           # not constant
    # the probe channels matter: the same weights read at other probes give another output
    other = UNF(spec, channels=(4, 4), out_features=3, probe=4).double()
    other.load_state_dict(unf.state_dict())
    other.probe_with(model, _probes(x, 4, g)).eval()
    assert not torch.allclose(other(w), y)


def test_probe_channels_of_a_siren_are_its_neurons_values():
    siren, probes, spec, w, _ = siren_batch(2, 5, seed=2)
    ch = ProbeChannels(spec, siren, probes)(w)
    names = spec.weight_names
    weight3, bias3 = names[4], names[5]                       # last layer: [1, 8] and [1]
    net = siren
    torch.nn.utils.vector_to_parameters(w.flatten()[1], net.parameters())
    with torch.no_grad():
        out = net(probes)[:, 0]                               # [S] the second network's values
    assert torch.allclose(ch[bias3][1, :5, 0], out, atol=1e-5)          # target of the output bias
    assert torch.allclose(ch[weight3][1, :5, 0, 3], out, atol=1e-5)     # target of every last-layer weight
    assert ch[bias3][1, 5:].abs().max() == 0                              # a bias has no source neuron
    assert torch.allclose(ch[names[0]][1, 5:, 0, 1], probes[:, 1], atol=1e-6)   # first layer: the input y
    target, source = entry_neurons(spec)
    assert target.shape == source.shape == (spec.num_weights,)


def test_unf_probe_errors_and_registry():
    from weightspace.models import SIREN
    from weightspace.train.data import zoo_evaluator  # noqa: F401  (the registry's evaluator, importable)
    from weightspace.train.models import build_model

    siren = SIREN(2, (8, 8), 1)
    probes = torch.zeros(3, 2)
    spec = ws.WeightSpaceSpec.from_module(siren, probes)
    w = ws.WeightSpace.from_state_dicts([siren.state_dict()] * 2, spec)
    with pytest.raises(ws.SpecError, match="probe_with"):
        UNF(spec, (4,), 2, probe=3)(w)
    with pytest.raises(ws.SpecError, match="probe=2"):
        UNF(spec, (4,), 2, probe=2).probe_with(siren, probes)
    with pytest.raises(ws.SpecError, match="probe=S"):
        UNF(spec, (4,), 2).probe_with(siren, probes)
    model = build_model("unf", spec, 2, evaluator=lambda s: (siren, torch.rand(s, 2)), channels=(4,), probe=3)
    assert model(w).shape == (2, 2)
