"""Gather indices and multipliers for one axis, from the spec's :class:`AxisAction` (``spec.blocks``).

Both return ``[L]`` for one element or ``[E, L]`` for one element per network, or None when nothing
on the axis moves; :func:`along` then applies them to a tensor ``[*lead, *shape]`` on the axis
counted from the right.
"""
from __future__ import annotations

import torch

from ..spec.blocks import AxisAction


def axis_index(action: AxisAction, perms: dict[str, torch.Tensor], device, batch: int | None) -> torch.Tensor | None:
    """Gather index for one axis: ``[L]`` or ``[B, L]``; None when nothing moves."""
    if not any(name in perms for name, *_ in action.segments):
        return None
    pieces = []
    for name, size, inner, off in action.segments:
        p = perms.get(name) if name is not None else None
        if p is None:
            idx = torch.arange(off, off + size * inner, device=device)
            if batch is not None:
                idx = idx.expand(batch, -1)
        else:
            p = p.to(device)
            if batch is not None and p.dim() == 1:
                p = p.expand(batch, -1)
            idx = (p.unsqueeze(-1) * inner + torch.arange(inner, device=device) + off).flatten(-2)
        pieces.append(idx)
    return torch.cat(pieces, -1)


def axis_factor(action: AxisAction, values: dict[str, torch.Tensor], like: torch.Tensor,
                batch: int | None) -> torch.Tensor | None:
    """Per-entry multiplier for one axis (``values ** action.exponent``): ``[L]`` or ``[B, L]``; None
    when nothing is scaled."""
    if not any(name in values for name, *_ in action.segments):
        return None
    pieces = []
    for name, size, inner, _ in action.segments:
        v = values.get(name) if name is not None else None
        shape = (size * inner,) if batch is None else (batch, size * inner)
        if v is None:
            pieces.append(torch.ones(shape, dtype=like.dtype, device=like.device))
        else:
            v = v.to(device=like.device, dtype=like.dtype)
            if batch is not None and v.dim() == 1:
                v = v.expand(batch, -1)
            e = action.exponent
            v = v if e == 1 else v.reciprocal() if e == -1 else v.pow(e)
            pieces.append(v.repeat_interleave(inner, dim=-1))
    return torch.cat(pieces, -1)


def _shape_for(t: torch.Tensor, axis: int, vec: torch.Tensor) -> list[int]:
    """View shape putting ``vec``'s last dim on ``axis`` (from the right) and its batch dim, if any,
    on the first dim of ``t``."""
    shape = [1] * t.dim()
    shape[axis] = vec.shape[-1]
    if vec.dim() == 2:
        shape[0] = vec.shape[0]
    return shape


def gather_along(t: torch.Tensor, axis: int, idx: torch.Tensor) -> torch.Tensor:
    """``t`` gathered on ``axis`` (counted from the right) by ``idx`` ``[L]`` or ``[B, L]``."""
    if idx.dim() == 1:
        return t.index_select(axis % t.dim(), idx)
    return torch.take_along_dim(t, idx.view(_shape_for(t, axis, idx)), dim=axis % t.dim())


def scale_along(t: torch.Tensor, axis: int, factor: torch.Tensor) -> torch.Tensor:
    """``t`` multiplied on ``axis`` (counted from the right) by ``factor`` ``[L]`` or ``[B, L]``."""
    return t * factor.view(_shape_for(t, axis, factor))
