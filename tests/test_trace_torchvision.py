"""Issue 20, torchvision gaps: small EfficientNet (stochastic depth), ConvNeXt (stochastic depth,
LayerScale), Swin (relative position bias gathered from a table and added per head; shifted windows:
``roll`` of spatial axes and a mask filled slice by slice; fx-wrapped helper functions traced
through) and MnasNet (the self-check keeps the state dict's version metadata) trace, keep their
head groups, and preserve their function under a random group element while moving weights.

torchvision's wheel here may ship compiled ops that fail to load (``import torchvision`` dies in
``torchvision/_meta_registrations.py``); its model definitions are pure Python, so that module is
replaced by an empty one when the plain import fails. Skipped when torchvision is not installed.
"""
from __future__ import annotations

import importlib
import sys
import types
from collections import OrderedDict

import pytest
import torch

import weightspace as ws


def _torchvision():
    try:
        return importlib.import_module("torchvision")
    except ImportError:
        pytest.skip("torchvision is not installed")
    except Exception:  # compiled ops that fail to load: keep the pure-Python model definitions
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        return importlib.import_module("torchvision")


@pytest.fixture(scope="module")
def tv():
    _torchvision()
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig
    from torchvision.models.mnasnet import MNASNet
    from torchvision.models.swin_transformer import SwinTransformer
    return {
        "efficientnet": lambda: EfficientNet([MBConvConfig(1, 3, 1, 8, 8, 1), MBConvConfig(4, 3, 2, 8, 16, 2)],
                                             dropout=0.1, stochastic_depth_prob=0.2, num_classes=3),
        "convnext": lambda: ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)],
                                     stochastic_depth_prob=0.1, num_classes=3),
        "swin": lambda: SwinTransformer([2, 2], 16, [2], [2], [2, 2], num_classes=3),
        "mnasnet": lambda: MNASNet(0.25, num_classes=3),
    }


@pytest.mark.parametrize("name", ["efficientnet", "convnext", "swin", "mnasnet"])
def test_torchvision_model_traces_and_preserves_function(name, tv):
    torch.manual_seed(0)
    model = tv[name]().double().eval()
    for m in model.modules():  # fresh BatchNorms are the identity: give them statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = ws.WeightSpaceSpec.from_module(model, x)
    assert spec.hidden_groups
    sd = model.state_dict()
    moved = OrderedDict(ws.act(sd, spec, ws.random_element(spec, torch.Generator().manual_seed(1))))
    moved._metadata = sd._metadata  # MNASNet's loader reads the version metadata (ws.act returns a plain dict)
    assert [k for k in sd if not torch.equal(sd[k], moved[k])]
    with torch.no_grad():
        y = model(x)
        model.load_state_dict(moved)
        y_moved = model(x)
        model.load_state_dict(sd)
    assert ((y - y_moved).abs().max() / y.abs().max()).item() < 1e-10
    if name == "swin":  # the bias table's head axis permutes with the heads of its block
        table = spec["features.1.0.attn.relative_position_bias_table"].axes
        assert table[0] is None and table[1] is not None
        heads = spec.group(table[1][0].group)
        assert heads.size == 2 and any(g.heads and g.heads[0] == heads.name for g in spec.groups)


@pytest.fixture(scope="module")
def timm():
    _torchvision()           # timm imports torchvision
    try:
        return importlib.import_module("timm")
    except ImportError:
        pytest.skip("timm is not installed")


TIMM = {   # small configurations, built from timm's classes (random weights)
    "eva02": (lambda t: t.create_model("eva02_tiny_patch14_224", pretrained=False, num_classes=3, img_size=28,
                                       patch_size=14, depth=2), 28),                # rotary slices of each head
    "resnetv2-bit": (lambda t: t.models.resnetv2.ResNetV2((1, 1, 1, 1), num_classes=3, stem_type="fixed",
                                                          conv_layer=t.layers.StdConv2d), 32),   # standardized weights
    "swin": (lambda t: t.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=3, img_size=32,
                                      window_size=2, depths=(1, 1), num_heads=(2, 2), embed_dim=16), 32),
    "mixer": (lambda t: t.models.mlp_mixer.MlpMixer(num_classes=3, img_size=32, patch_size=8, num_blocks=2,
                                                    embed_dim=16), 32),
}


@pytest.mark.parametrize("name", list(TIMM))
def test_timm_model_traces_and_preserves_function(name, timm):
    """timm's EVA-02 (rotary), ResNetV2 / BiT (weight standardization: the weight itself reshaped and
    normalized), Swin and MLP-Mixer: traced with their self-check, weights moved, function kept."""
    torch.manual_seed(0)
    build, size = TIMM[name]
    model = build(timm).double().eval()
    with torch.no_grad():      # timm zero-initializes some heads and scales: make every weight matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = ws.WeightSpaceSpec.from_module(model, x)
    assert spec.hidden_groups
    sd = model.state_dict()
    moved = ws.act(sd, spec, ws.random_element(spec, torch.Generator().manual_seed(1)))
    assert [k for k in sd if not torch.equal(sd[k], moved[k])]
    with torch.no_grad():
        y = model(x)
        model.load_state_dict(moved)
        y_moved = model(x)
    assert ((y - y_moved).abs().max() / y.abs().max()).item() < 1e-10
