"""Activations written out of elementwise pieces: name the function the neurons see.

GPT-2's ``gelu_new`` is ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))``: a chain of
elementwise ops on one site's values, closed by a product of two of its branches. Labelled piece by
piece, its neurons would read as ``tanh`` (the first nonlinearity met), and graph features, and any
symmetry read off the label, would be wrong. So the tracer follows which site's values each
elementwise result is a function of (its *root*), and when a product of two branches of one root
closes a chain, it compares the product with the vocabulary's self-gated activations evaluated on
the root's values (the example inputs): a match names the neurons' activation (``gelu`` for both
the exact and the tanh form, ``silu``, ``mish``, ``hardswish``), and that name takes precedence
over the labels of the pieces. No sign symmetry is involved: the gating product breaks the
diagonal symmetries of its operands.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .labels import Feat, Space
from .state import TraceState

# (label, function) in the order tried; both GELU forms are the vocabulary's "gelu"
SELF_GATED = (("gelu", lambda x: F.gelu(x, approximate="tanh")), ("gelu", F.gelu), ("silu", F.silu),
              ("mish", F.mish), ("hardswish", F.hardswish))


def root_of(state: TraceState, space: Space) -> tuple[Space, torch.Tensor] | None:
    return state.roots.get(id(space))


def note_elementwise(state: TraceState, x_held: Feat, x_value: torch.Tensor, y_held: Feat) -> None:
    """``y`` (on ``y_held``) is an elementwise function of ``x``'s values."""
    if x_held.start != 0 or x_held.length != x_held.space.size:
        return  # only whole sites are followed
    root = state.roots.setdefault(id(x_held.space), (x_held.space, x_value))
    if y_held.space is not x_held.space:
        state.roots.setdefault(id(y_held.space), root)


def note_join(state: TraceState, ha: Feat, hb: Feat, site: Space, name: str, out) -> None:
    """Two sites' values combined into ``site``: when both are functions of one root, so is the
    result; a product that equals a known self-gated activation of the root names it."""
    ra, rb = root_of(state, ha.space), root_of(state, hb.space)
    if ra is None or rb is None or ra[0] is not rb[0] or ha.length != ha.space.size or hb.length != hb.space.size:
        return
    state.roots[id(site)] = ra
    x = ra[1]
    if name != "mul" or not isinstance(out, torch.Tensor) or out.shape != x.shape or not x.is_floating_point():
        return
    scale = out.abs().max().clamp_min(1e-12)
    for label, fn in SELF_GATED:
        with torch.no_grad():
            ref = fn(x)
        if ((ref - out).abs().max() / scale).item() < 1e-3:
            state.composites.append((site, 0, site.size, label))
            return
