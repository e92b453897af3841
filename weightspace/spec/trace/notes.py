"""Sentences a spec carries about how it was traced (``WeightSpaceSpec.notes``).

A spec that is valid but smaller than a user expects must say why. Rules that remove a symmetry on
purpose call :meth:`~.context.RuleContext.pin` with a reason; the outputs pin their features (a
caller reads them by position). After tracing, each reason is reported with the parameters whose
axes it fixed, so e.g. a base model returning hidden states explains that its residual stream is
fixed because it *is* the output axis, and a rotary embedding names the q / k projections whose
within-head order it pinned.
"""
from __future__ import annotations

import re

from . import structure as S
from .state import TraceState

_MIN_SHARED = 3  # output features read by this many parameters are worth a note (a residual stream)


def _pinned_axes(state: TraceState, leaves: set[int]) -> list[str]:
    out = []
    for (param, axis), space in state.param_spaces.items():
        if any(id(S.find(lf)) in leaves for lf in S.leaves(space.var)):
            out.append(f"{param}:{axis}")
    return out


def _summary(axes: list[str], k: int = 3) -> str:
    shown = ", ".join(axes[:k])
    return shown + (f" and {len(axes) - k} more" if len(axes) > k else "")


def trace_notes(state: TraceState, output_note: str | None) -> tuple[str, ...]:
    """The output note, then one note per reason; the same reason in repeated blocks (``layers.0``,
    ``layers.1`` ...) is said once, with the block index as ``*``."""
    notes: list[str] = [output_note] if output_note else []
    merged: dict[str, tuple[list[str], set[str]]] = {}
    for leaves, sentence, output in state.pins:
        roots = {id(S.find(lf)) for lf in leaves}
        axes = _pinned_axes(state, roots)
        if output:
            params = {a.rsplit(":", 1)[0] for a in axes}
            if len(params) < _MIN_SHARED:
                continue
            sentence = (f"{sentence}; {len(params)} parameters read these features ({_summary(axes)}), as a "
                        "residual stream does, so it is fixed. A task head on the output (a classifier, an "
                        "LM head) lets it permute")
            axes = []
        key = _BLOCK_INDEX.sub(".*.", sentence)
        entry = merged.setdefault(key, ([], set()))
        entry[0].extend(a for a in axes if a not in entry[0])
        entry[1].add(sentence)
    for key, (axes, variants) in merged.items():
        text = key if len(variants) > 1 else next(iter(variants))
        notes.append(f"{text} (affects {_summary(axes)})" if axes else text)
    return tuple(notes)


_BLOCK_INDEX = re.compile(r"\.\d+\.")
