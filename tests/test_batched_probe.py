"""Batched probe features: equal to the per-network reference on many architectures, and a graph
metanetwork reading them stays invariant to the networks' permutations."""
from __future__ import annotations

import pytest
import torch
from architectures import ARCHITECTURES

import weightspace as ws
from weightspace.graph.batched_probe import ProbePlan
from weightspace.graph.probe import probe_features
from weightspace.symmetry import random_element

CASES = [a for a in ARCHITECTURES if a.name in ("mlp_relu", "mlp_tanh", "siren", "small_cnn", "vgg_bn", "resnet20",
                                                "conv1d", "unet", "squeeze_excite")]


def _batch(model, spec, n, g):
    sds = []
    for _ in range(n):
        sds.append({k: (v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype)) if v.is_floating_point() else v
                    for k, v in model.state_dict().items()})
    return ws.WeightSpace.from_state_dicts(sds, spec)


@pytest.mark.parametrize("arch", CASES, ids=lambda a: a.name)
def test_batched_probe_equals_the_per_network_reference(arch, traced_arch):
    model, x, spec = traced_arch(arch, torch.float32)
    g = torch.Generator().manual_seed(0)
    w = _batch(model, spec, 3, g)
    ref = probe_features(model, spec, x, w)
    out = ProbePlan(model, spec, x)(w)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4), float((out - ref).abs().max())
    assert ref.abs().sum() > 0                      # not a comparison of two zero tensors
    per_net = out.reshape(3, -1, out.shape[-1])
    assert not torch.allclose(per_net[0], per_net[1])      # each network's own values


def siren_batch(n: int, probes: int, seed: int):
    """``(siren, probe inputs [probes, 2], spec, WeightSpace of n perturbed copies, generator)``."""
    from weightspace.models import SIREN

    g = torch.Generator().manual_seed(seed)
    siren = SIREN(2, (8, 8), 1)
    inputs = torch.rand(probes, 2, generator=g) * 2 - 1
    spec = ws.WeightSpaceSpec.from_module(siren, inputs)
    return siren, inputs, spec, _batch(siren, spec, n, g), g


def test_probe_features_permute_with_the_nodes_and_keep_a_metanetwork_invariant():
    from weightspace.nn import NGGNN

    siren, probes, spec, w, g = siren_batch(4, 6, seed=1)
    model = NGGNN(hidden=8, layers=2, out_features=3, probe=True).probe_with(siren, probes).eval()
    y = model(w)
    elem = random_element(spec, g, batch_size=4, kinds=("permutation",))
    moved = elem.act(w)
    assert (moved.flatten() - w.flatten()).abs().max() > 1e-3          # the weights did move
    assert torch.allclose(model(moved), y, atol=1e-5)                 # the prediction did not
    assert y.std(0).max() > 1e-4                                       # and it is not constant
    without = NGGNN(hidden=8, layers=2, out_features=3, probe=True)
    with pytest.raises(ws.SpecError, match="probe"):
        without(w)
