"""After tracing, the spec checks itself: a random group element must leave the module's outputs
on the example inputs unchanged. A failure is a weightspace bug, reported rather than returned,
unless the module's own outputs differ between two calls (a random draw the tracer could not see,
e.g. ``numpy.random`` in forward): that is said as such, not as an internal error."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

from ..errors import TraceError
from .outputs import traced_output


def _tensors(x):
    x = traced_output(x)[0]
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


def self_check(module: torch.nn.Module, spec, inputs: tuple, kwargs: dict, tol: float = 1e-3) -> None:
    from ...symmetry import flip_sign, permute, random_permutation, random_scaling, random_sign_flip, scale

    current = module.state_dict()
    # state-dict metadata (per-module versions) goes back in with every load: some modules'
    # _load_from_state_dict reads it (torchvision's MnasNet refuses a state dict without it)
    meta = getattr(current, "_metadata", None)
    original = _with_metadata({k: v.detach().clone() for k, v in current.items()}, meta)
    if not any(v.is_floating_point() for v in original.values()):
        return
    g = torch.Generator().manual_seed(1234)
    moved = permute(original, spec, random_permutation(spec, generator=g))
    moved = scale(moved, spec, random_scaling(spec, generator=g, low=0.8, high=1.25))
    moved = _with_metadata(flip_sign(moved, spec, random_sign_flip(spec, generator=g)), meta)
    with torch.no_grad():
        before = _tensors(module(*inputs, **kwargs))
        again = _tensors(module(*inputs, **kwargs))
        if _worst(before, again) > tol:
            raise TraceError(f"the outputs of {type(module).__name__} differ between two calls with the same weights "
                             "and inputs (random numbers drawn in forward, outside torch's ops?), so the traced "
                             "spec cannot be checked: make forward deterministic in eval mode, or pass check=False")
        try:
            module.load_state_dict(moved)
            after = _tensors(module(*inputs, **kwargs))
        finally:
            module.load_state_dict(original)
    err = _worst(before, after)
    if not err <= tol:
        raise TraceError(f"internal error: the traced spec of {type(module).__name__} does not preserve its "
                         f"function (relative output change {err:.2e} under a random group element). "
                         "Please report this; meanwhile pass check=False or build the spec by hand.")


def _with_metadata(sd: dict, meta) -> dict:
    out = OrderedDict(sd)
    if meta is not None:
        out._metadata = meta
    return out


def _worst(before: list, after: list) -> float:
    """The largest relative change between two lists of outputs (floating-point tensors only)."""
    errs = [((a - b).abs().max() / (a.abs().max() + 1e-6)).item()
            for a, b in zip(before, after) if a.is_floating_point() and a.numel()]
    return max(errs, key=lambda e: math.inf if math.isnan(e) else e, default=0.0)  # NaN counts as worst
