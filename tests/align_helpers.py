"""Shared pieces of the alignment / merging tests: traced architectures with generic weights, and
small trained digit classifiers (cached per session)."""
from __future__ import annotations

import functools

import torch

import weightspace as ws
from architectures import ARCHITECTURES
from weightspace.data.digits import digits, train_classifier
from weightspace.models import VGG, mlp

BY_NAME = {a.name: a for a in ARCHITECTURES}

# These tests run many small tensor ops; on a busy 2-core machine intra-op threads spin-wait for
# each other (10-20x slowdowns seen), so they use one.
torch.set_num_threads(1)


def generic(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give norm layers non-trivial affines and statistics (at init they are all 1 / 0, which makes
    neurons indistinguishable by those entries)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and t.dim() == 1:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.add_(0.3 * torch.randn(t.shape, generator=g))
    return model.eval()


@functools.lru_cache(maxsize=None)
def traced(name: str, seed: int = 0, randomize: bool = True):
    """``(model, spec, inputs)`` for an architecture of tests/architectures.py."""
    arch = BY_NAME[name]
    torch.manual_seed(seed)
    model = arch.build().eval()
    if randomize:
        generic(model, seed)
    inputs = arch.inputs(torch.Generator().manual_seed(seed))
    return model, ws.WeightSpaceSpec.from_module(model, inputs), inputs


@functools.lru_cache(maxsize=None)
def digit_mlps(n: int = 2, widths: tuple = (64, 64, 64, 10), epochs: int = 25):
    """``n`` MLPs trained on digits from seeds 0..n-1, and the data."""
    (xtr, ytr), (xte, yte) = digits()
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(train_classifier(mlp(list(widths)), xtr, ytr, epochs=epochs, seed=seed))
    return models, (xtr, ytr), (xte, yte)


@functools.lru_cache(maxsize=None)
def digit_cnns():
    """Two small VGG-style CNNs with BatchNorm trained on 8x8 digit images from seeds 0 and 1."""
    (xtr, ytr), (xte, yte) = digits(image=True)
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        m = VGG((8, 16), in_channels=1, image_size=8, num_classes=10, hidden=32)
        models.append(train_classifier(m, xtr, ytr, epochs=6, seed=seed))
    return models, (xtr, ytr), (xte, yte)
