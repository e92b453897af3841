"""Attention in the parameter graph: the heads of an ``attention`` op and which key / value head each
query head reads.

The graph gives attention one parameter-free node per QUERY head (``H`` of them): fed by that head's
query neurons and by the key neurons of the key / value head it reads, and feeding its output
neurons; the value neurons of a key / value head feed, by identity edges, the output neurons of
every query head that reads it. With as many key / value heads as query heads this is ordinary
multi-head attention; with fewer it is grouped-query attention (``Hk`` key / value heads, each read
by ``H / Hk`` query heads), multi-query attention when ``Hk = 1``.

Everything is read from the dataflow op and the spec, never from model names:

* ``H`` is the op's ``heads``; the output site has ``H * dv`` neurons (``dv`` value neurons per head);
  the query view has ``H`` heads, the value view ``Hk = len(v) / dv`` heads (``Hk`` divides ``H``), the
  key view as many as the value view.
* Which key / value head a query head reads is what the symmetry ties it to: the spec's layouts say
  which group element moves each head (and, through head-structured groups, which element of the
  parent group moves it whole). A query head reads the key / value head moved by a shared element:
  consecutive groups of query heads when key / value heads are repeated with ``repeat_interleave``,
  ``expand`` + ``reshape`` (``transformers``' ``repeat_kv``) or ``enable_gqa=True``, every ``Hk``-th
  head when they are tiled with ``repeat``. Where the layouts cannot tell (the heads are pinned, so
  no symmetry is at stake) the query heads read key / value heads in consecutive groups, as
  ``scaled_dot_product_attention(..., enable_gqa=True)`` defines it.
* When the values are a slice of every head's block of a fused per-head q/k/v projection
  (GPT-NeoX: ``view(B, T, H, 3 * d)`` then ``chunk``), the three views are the whole projection and
  the dataflow cannot say which neurons of a head's block are values: the whole block feeds the head
  node (query, key and value edges) and the head node feeds the head's output neurons.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..spec.types import Op, SiteView


@dataclass(frozen=True)
class AttentionHeads:
    """The head structure of one ``attention`` op, as the parameter graph draws it.

    ``heads``: query heads H (one head node each); ``q_dim`` / ``k_dim``: query / key neurons per head;
    ``kv_heads``: key / value heads Hk; ``v_dim``: output neurons per head (and value neurons per
    key / value head unless ``fused``); ``kv_of [H]``: the key / value head each query head reads;
    ``fused``: the value view is a per-head block of ``v_block`` neurons that holds the values
    somewhere inside (see the module docstring)."""

    heads: int
    q_dim: int
    kv_heads: int
    k_dim: int
    v_dim: int
    v_block: int
    kv_of: torch.Tensor
    fused: bool


def attention_heads(spec: WeightSpaceSpec, op: Op) -> AttentionHeads:
    """The :class:`AttentionHeads` of an ``attention`` op of ``spec``'s dataflow."""
    q, k, v = op.inputs
    h = op.attr("heads", 1)
    n_out = spec.dataflow.site(op.output).size
    where = f"attention op '{op.name}'"
    if h < 1 or n_out % h:
        raise SpecError(f"{where}: {n_out} output neurons do not split into its {h} heads")
    dv = n_out // h
    hk = v.length // dv if v.length % dv == 0 else 0
    fused = not (1 <= hk <= h and h % hk == 0)
    if fused:
        if v.length % h:
            raise SpecError(f"{where}: its value view of {v.length} neurons is neither key / value heads of "
                            f"{dv} neurons read by its {h} query heads nor one block per query head")
        hk = h
    for view, n, role in ((q, h, "query"), (k, hk, "key")):
        if view.length % n:
            raise SpecError(f"{where}: its {role} view of {view.length} neurons does not split into {n} heads")
    dq, dk = q.length // h, k.length // hk
    kv_of = torch.arange(h) if hk == h else _kv_of(spec, q, dq, h, k, dk, hk)
    return AttentionHeads(heads=h, q_dim=dq, kv_heads=hk, k_dim=dk, v_dim=dv, v_block=v.length // hk, kv_of=kv_of,
                          fused=fused)


def _kv_of(spec: WeightSpaceSpec, q: SiteView, dq: int, h: int, k: SiteView, dk: int, hk: int) -> torch.Tensor:
    """``[H]``: the key head each query head reads, matched by the group elements that move them
    (consecutive groups of ``H / Hk`` when the layouts do not tell, see the module docstring)."""
    q_labels = _block_labels(spec, q, dq, h)
    k_labels = _block_labels(spec, k, dk, hk)
    found = []
    for labels in q_labels:
        hits = [g for g, kl in enumerate(k_labels) if labels & kl]
        if len(hits) != 1:
            return torch.arange(h) // (h // hk)
        found.append(hits[0])
    return torch.tensor(found, dtype=torch.long)


def _block_labels(spec: WeightSpaceSpec, view: SiteView, block: int, n: int) -> list[set[tuple[str, int]]]:
    """Per block of ``block`` neurons of the view: the ``(group, element)`` pairs that move its first
    neuron, the element of its group and those of the group's head ancestors (a head-structured
    group's element ``i`` moves with element ``i // b`` of its parent). Fixed neurons: no pairs."""
    segments, off = [], 0
    for seg in spec.dataflow.site(view.site).layout:
        segments.append((seg, off))
        off += seg.length
    out = []
    for b in range(n):
        neuron = view.start + b * block
        labels: set[tuple[str, int]] = set()
        for seg, start in segments:
            if start <= neuron < start + seg.length and seg.group is not None:
                name, i = seg.group, (neuron - start) // seg.inner
                labels.add((name, i))
                parent = spec.group(name).heads
                while parent is not None:
                    name, i = parent[0], i // parent[1]
                    labels.add((name, i))
                    parent = spec.group(name).heads
        out.append(labels)
    return out
