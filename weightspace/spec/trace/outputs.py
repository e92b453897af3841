"""Which of a module's outputs a spec is about.

A spec pins the features a module returns (they are what a caller reads), so the tracer must know
which returned values are outputs. Tensors, tuples, lists and dicts of tensors are outputs as they
are. A *record* output -- a dataclass such as a Hugging Face ``ModelOutput`` (logits, last hidden
state, pooled output, next to a key/value cache object) -- keeps its tensor fields (and tuples /
lists of tensors, e.g. requested hidden states) and leaves out every other object (caches), since
those are bookkeeping for the next call, not values of this one. The spec records which fields it
traced (``spec.notes``), so a user sees e.g. that ``logits`` were traced and ``past_key_values``
were not.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch


def _is_tensor_tree(v: Any) -> bool:
    if isinstance(v, torch.Tensor) or hasattr(v, "node"):  # a tensor or a traced proxy
        return True
    if isinstance(v, (tuple, list)) and v:
        return all(_is_tensor_tree(x) for x in v)
    return False


def traced_output(out: Any) -> tuple[Any, str | None]:
    """``out`` reduced to the values a spec describes, and a sentence saying what was kept (None when
    ``out`` is kept whole)."""
    if not (dataclasses.is_dataclass(out) and not isinstance(out, type)):
        return out, None
    fields = [f.name for f in dataclasses.fields(out)]
    values = {name: getattr(out, name, None) for name in fields}
    kept = {k: v for k, v in values.items() if v is not None and _is_tensor_tree(v)}
    dropped = [f"{k} ({type(v).__name__})" for k, v in values.items() if v is not None and k not in kept]
    if not kept:
        return out, None
    note = (f"outputs: the tensor fields {', '.join(kept)} of the {type(out).__name__} returned by forward "
            "are the traced outputs (their features are fixed)")
    if dropped:
        note += f"; not traced: {', '.join(dropped)}"
    return dict(kept), note
