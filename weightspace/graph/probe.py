"""Probe features: a network's activations on fixed probe inputs, as node features."""
from __future__ import annotations

from typing import Any

import torch

from ..space import WeightSpace
from ..spec.activations import site_activations
from ..spec.errors import require_module
from ..spec.spec import WeightSpaceSpec
from .plan import graph_plan


def probe_features(module: torch.nn.Module, spec: WeightSpaceSpec, probes: Any,
                   weights: WeightSpace | None = None) -> torch.Tensor:
    """``[B * N, S]``: for each of the B networks (``weights``, or the module's own weights), the value
    of every neuron on each of the S probe inputs (averaged over pixels / tokens); attention head
    nodes get zeros. ``probes`` is a batch of S inputs (a tensor whose first dim is S, or a tuple).
    The module is used as an evaluator: its weights are restored afterwards."""
    require_module(module, "probe_features")
    plan = graph_plan(spec)
    states = [None] if weights is None else weights.to_state_dicts()
    original = {k: v.clone() for k, v in module.state_dict().items()} if weights is not None else None
    out = []
    try:
        for sd in states:
            if sd is not None:
                module.load_state_dict(sd)
            acts = site_activations(module, probes, spec, flatten=False)
            s = next(iter(acts.values())).shape[0]
            feats = torch.zeros(plan.num_nodes, s)
            for site_id, v in acts.items():
                v = v.reshape(v.shape[0], -1, v.shape[-1]).mean(1) if v.dim() > 2 else v
                start = int(plan.site_offset[site_id])
                feats[start:start + v.shape[-1]] = v.T.to(feats.dtype)
            out.append(feats)
    finally:
        if original is not None:
            module.load_state_dict(original)
    return torch.cat(out)
