"""After tracing, the spec checks itself: a random group element must leave the module's outputs
on the example inputs unchanged. A failure is a weightspace bug, reported rather than returned."""
from __future__ import annotations

import torch

from ..errors import TraceError


def _tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


def self_check(module: torch.nn.Module, spec, inputs: tuple, kwargs: dict, tol: float = 1e-3) -> None:
    from ...symmetry import flip_sign, permute, random_permutation, random_scaling, random_sign_flip, scale

    original = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if not any(v.is_floating_point() for v in original.values()):
        return
    g = torch.Generator().manual_seed(1234)
    moved = permute(original, spec, random_permutation(spec, generator=g))
    moved = scale(moved, spec, random_scaling(spec, generator=g, low=0.8, high=1.25))
    moved = flip_sign(moved, spec, random_sign_flip(spec, generator=g))
    with torch.no_grad():
        before = _tensors(module(*inputs, **kwargs))
        try:
            module.load_state_dict(moved)
            after = _tensors(module(*inputs, **kwargs))
        finally:
            module.load_state_dict(original)
    for a, b in zip(before, after):
        if not a.is_floating_point():
            continue
        err = ((a - b).abs().max() / (a.abs().max() + 1e-6)).item() if a.numel() else 0.0
        if not err <= tol:
            raise TraceError(f"internal error: the traced spec of {type(module).__name__} does not preserve its "
                             f"function (relative output change {err:.2e} under a random group element). "
                             "Please report this; meanwhile pass check=False or build the spec by hand.")
