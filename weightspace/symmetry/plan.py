"""Index arithmetic per spec, computed once: which segments of which axes each group touches."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..spec.spec import WeightSpaceSpec
from ..spec.types import Layout


@dataclass(frozen=True)
class AxisPlan:
    param: str
    axis: int
    length: int
    segments: tuple[tuple[str | None, int, int, int], ...]  # (name, size, inner, offset)


def _segments(layout: Layout) -> tuple[tuple[str | None, int, int, int], ...]:
    out, off = [], 0
    for s in layout:
        out.append((s.group, s.size, s.inner, off))
        off += s.length
    return tuple(out)


def cached(spec: WeightSpaceSpec, key: str, build):
    """Per-spec cache (specs are immutable): built once, kept on the instance."""
    store = spec.__dict__.setdefault("_cache", {})
    if key not in store:
        store[key] = build()
    return store[key]


def permutation_plan(spec: WeightSpaceSpec) -> dict[str, tuple[AxisPlan, ...]]:
    """Per parameter, the axes that permutations act on."""
    return cached(spec, "permutation_plan", lambda: _permutation_plan(spec))


def _permutation_plan(spec: WeightSpaceSpec) -> dict[str, tuple[AxisPlan, ...]]:
    plans: dict[str, list] = {}
    for p in spec.params:
        for k, lay in enumerate(p.axes):
            if lay is not None:
                plans.setdefault(p.name, []).append(AxisPlan(p.name, k, p.shape[k], _segments(lay)))
    return {k: tuple(v) for k, v in plans.items()}


def scaling_plan(spec: WeightSpaceSpec) -> dict[str, tuple[tuple[AxisPlan, int], ...]]:
    """Per parameter, the (axis, exponent) pairs that scalings act on."""
    def build():
        plans: dict[str, list] = {}
        for p in spec.params:
            for a in p.scales:
                plans.setdefault(p.name, []).append(
                    (AxisPlan(p.name, a.axis, p.shape[a.axis], _segments(a.layout)), a.exponent))
        return {k: tuple(v) for k, v in plans.items()}
    return cached(spec, "scaling_plan", build)


def axis_index(plan: AxisPlan, perms: dict[str, torch.Tensor], device, batch: int | None) -> torch.Tensor | None:
    """Gather index for one axis: ``[L]`` or ``[B, L]``; None when nothing moves."""
    if not any(name in perms for name, *_ in plan.segments):
        return None
    pieces = []
    for name, size, inner, off in plan.segments:
        p = perms.get(name) if name is not None else None
        if p is None:
            idx = torch.arange(off, off + size * inner, device=device)
            if batch is not None:
                idx = idx.expand(batch, -1)
        else:
            p = p.to(device)
            if batch is not None and p.dim() == 1:
                p = p.expand(batch, -1)
            idx = p.unsqueeze(-1) * inner + torch.arange(inner, device=device) + off
            idx = idx.flatten(-2)
        pieces.append(idx)
    return torch.cat(pieces, -1)


def axis_factor(plan: AxisPlan, values: dict[str, torch.Tensor], exponent: int, like: torch.Tensor,
                batch: int | None) -> torch.Tensor | None:
    """Per-entry multiplier for one axis: ``[L]`` or ``[B, L]``; None when nothing is scaled."""
    if not any(name in values for name, *_ in plan.segments):
        return None
    pieces = []
    for name, size, inner, off in plan.segments:
        v = values.get(name) if name is not None else None
        shape = (size * inner,) if batch is None else (batch, size * inner)
        if v is None:
            pieces.append(torch.ones(shape, dtype=like.dtype, device=like.device))
        else:
            v = v.to(device=like.device, dtype=like.dtype)
            if batch is not None and v.dim() == 1:
                v = v.expand(batch, -1)
            v = v if exponent == 1 else v.reciprocal() if exponent == -1 else v.pow(exponent)
            pieces.append(v.repeat_interleave(inner, dim=-1))
    return torch.cat(pieces, -1)
