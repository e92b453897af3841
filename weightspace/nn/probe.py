"""Probe features as input channels of equivariant-layer models (``UNF(..., probe=S)``).

Neural Graphs' probe features (every neuron's value on S probe inputs, :class:`~weightspace.graph.
batched_probe.ProbePlan`) live on neurons; an equivariant layer reads channels per weight entry.
Design: the parameter graph already says which neurons every entry touches (a weight entry is an
edge, source neuron -> target neuron; a bias or norm entry sits on one neuron), so that map is read
off the spec's :class:`~weightspace.graph.plan.GraphPlan` once, and the S values of an entry's
target neuron and of its source neuron become ``2 S`` more channels (zeros where there is none: a
bias has no source, graph-level weights have neither). The group moves the neurons with the entries
(the graph is equivariant), so these channels move with the weights and a model on them keeps its
symmetry. Output neurons are fixed, so an invariant pool keeps their channels: the function's
values at the probes (an INR's image at S points) reach the head as they are.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..space import WeightSpace
from ..spec.spec import WeightSpaceSpec

__all__ = ["ProbeChannels", "entry_neurons"]


def entry_neurons(spec: WeightSpaceSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, source)``, each ``[P]`` (``WeightSpace.flatten()`` order): the graph node every
    weight entry points into and the one it comes from; ``N`` (the node count) where there is none."""
    from ..graph.plan import graph_plan

    plan = graph_plan(spec)
    p, n = spec.num_weights, plan.num_nodes
    target = torch.full((p,), n, dtype=torch.long)
    source = torch.full((p,), n, dtype=torch.long)
    cols = plan.x_src.long()
    node = torch.arange(cols.numel()) // plan.node_dim
    ok = cols < p                                               # the zero and constants: no weight
    target[cols[ok]] = node[ok]
    cols = plan.e_src.long()
    edge = torch.arange(cols.numel()) // plan.edge_dim
    ok = cols < p
    index = plan.edge_index
    source[cols[ok]] = index[0, edge[ok]]
    target[cols[ok]] = index[1, edge[ok]]
    return target, source


class ProbeChannels(nn.Module):
    """``channels(w) -> {name: Tensor[B, 2 S, *shape]}``: for every entry of every learned-on tensor,
    the values of its target and of its source neuron on the S probe ``inputs`` (a tensor
    ``[S, ...]``), the networks run batched by ``module`` (an evaluator of ``spec``, never modified)."""

    def __init__(self, spec: WeightSpaceSpec, module: nn.Module, inputs: Any):
        super().__init__()
        from ..graph.batched_probe import ProbePlan

        self.spec = spec
        self.plan = ProbePlan(module, spec, inputs)
        self.num_probes = self.plan.num_probes
        target, source = entry_neurons(spec)
        self.register_buffer("index", torch.stack([target, source]), persistent=False)   # [2, P]

    def forward(self, w: WeightSpace) -> dict[str, torch.Tensor]:
        b, s = w.batch_size, self.num_probes
        act = self.plan(w).reshape(b, -1, s)                                    # [B, N, S]
        act = torch.cat([act, act.new_zeros(b, 1, s)], 1)                       # node N: none
        both = act[:, self.index.reshape(-1)].reshape(b, 2, -1, s)             # [B, 2, P, S]
        out, lo = {}, 0
        for name in self.spec.weight_names:
            shape = self.spec[name].shape
            k = int(torch.Size(shape).numel())
            part = both[:, :, lo:lo + k]                                        # [B, 2, k, S]
            out[name] = part.permute(0, 1, 3, 2).reshape(b, 2 * s, *shape)
            lo += k
        return out
