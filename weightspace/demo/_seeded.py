"""Demo networks initialized from a generator, so a demo step is reproducible without seeding (or
re-seeding) torch's global random state."""
from __future__ import annotations

import math

import torch

__all__ = ["reinit"]


@torch.no_grad()
def reinit(model: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Redraw ``model``'s weights from ``generator`` in place and return it: PyTorch's default for
    linear and convolution layers, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, for every parameter of
    two or more dimensions and the biases that go with them (``bias`` beside ``weight``,
    ``in_proj_bias`` beside ``in_proj_weight``); other one-dimensional parameters (norm affines) keep
    their constant initialization."""
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        for name, p in own.items():
            if p.dim() > 1:
                fan_in = p[0].numel()
            elif name.endswith("bias") and own.get(name[:-4] + "weight", p).dim() > 1:
                fan_in = own[name[:-4] + "weight"][0].numel()
            else:
                continue
            bound = 1 / math.sqrt(max(1, fan_in))
            p.uniform_(-bound, bound, generator=generator)
    return model
