"""Shared fixtures."""
from __future__ import annotations

import pytest
import torch

import weightspace as ws


@pytest.fixture(scope="session")
def traced_arch():
    """``traced_arch(arch, dtype)`` -> (model, example inputs, spec), built once per architecture."""
    cache = {}

    def get(arch, dtype=torch.float64):
        key = (arch.name, dtype)
        if key not in cache:
            torch.manual_seed(0)
            model = arch.build().to(dtype).eval()
            x = tuple(t.to(dtype) if t.is_floating_point() else t
                      for t in arch.inputs(torch.Generator().manual_seed(1)))
            cache[key] = (model, x, ws.WeightSpaceSpec.from_module(model, x))
        return cache[key]

    return get
