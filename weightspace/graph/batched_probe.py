"""Probe features for a whole batch of networks at once: one traced forward, vmapped over weights.

Design: :func:`~weightspace.graph.probe.probe_features` re-traces the module for every network,
which is fine for a few networks and far too slow inside a training loop. A :class:`ProbePlan` is
computed once per (module, spec, probe inputs): the tracer's interpretation says which fx node
holds the final values of every dataflow site (after its last elementwise op) and along which dim
its neurons lie; the traced graph is then cut into a ``GraphModule`` that returns exactly those
nodes, and ``torch.func.vmap`` of ``functional_call`` runs it for all B networks in one call.
Input sites take the probe inputs themselves (the same for every network); attention-head nodes
and sites the tracer cannot pin to one node stay zero, as in ``probe_features``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ..space import WeightSpace
from ..spec.spec import WeightSpaceSpec
from .plan import graph_plan

__all__ = ["ProbePlan"]


class ProbePlan:
    """``plan(weights) -> [B * N, S]``: every node's value on each of the S probe inputs, for a
    WeightSpace of B networks of ``spec`` run by ``module`` (used as an evaluator, never modified)."""

    def __init__(self, module: torch.nn.Module, spec: WeightSpaceSpec, probes: Any):
        from ..spec.trace import _as_inputs
        from ..spec.trace.interpret import interpret
        from ..spec.activations import whole_site
        from ..spec.trace.state import TraceState
        from ..spec.trace.tracer import ConcreteTracer

        self.spec, self.plan = spec, graph_plan(spec)
        self.args, kwargs = _as_inputs(probes)
        if kwargs:
            raise ValueError("probe inputs are positional tensors (a tensor [S, ...] or a tuple of them)")
        was = module.training
        module.eval()
        found: dict[int, tuple[fx.Node, int]] = {}
        state = None
        n_probes = int(self.args[0].shape[0])

        def record(t):
            site = whole_site(t)
            if site is None:
                return
            node = state.current_node
            val = node.meta.get("val")
            if torch.is_tensor(val) and val.shape == t.value.shape and val.dim() >= 2 and val.shape[0] == n_probes \
                    and site[1] != 0:                    # per probe sample, neurons on another dim
                found[site[0]] = (node, site[1])
            else:
                found.pop(site[0], None)

        try:
            with torch.no_grad():
                graph = ConcreteTracer().trace_concrete(module, self.args, {})
                state = TraceState(module)
                interpret(graph, state, on_value=record)
        finally:
            module.train(was)
        sizes = [s.size for s in spec.dataflow.sites] if spec.dataflow is not None else None
        if sizes is not None and sizes != [s.size for s in state.sites]:
            raise ValueError("the module's dataflow does not match the spec's (another architecture?)")
        self.sites = [(sid, dim) for sid, (node, dim) in sorted(found.items())]
        self.module = fx.GraphModule(module, _returning(graph, [found[sid][0] for sid, _ in self.sites]))
        self.module.eval()
        placeholders = [n.target for n in graph.nodes if n.op == "placeholder"]
        named = dict(zip(placeholders, self.args))
        self.inputs = []                                   # (site id, [S, size]) for input sites
        for key, site in state.input_sites.items():
            if len(key) == 2 and key[0] in named and isinstance(key[1], int) and torch.is_tensor(named[key[0]]):
                if site.site_id not in found:
                    self.inputs.append((site.site_id, _per_sample(named[key[0]].movedim(key[1], -1))))
        self.num_probes = int(self.args[0].shape[0])

    @torch.no_grad()
    def __call__(self, weights: WeightSpace) -> torch.Tensor:
        params = {n: t for n, t in weights.tensors.items()}
        B, S, N = weights.batch_size, self.num_probes, self.plan.num_nodes

        def run(p):
            return torch.func.functional_call(self.module, p, self.args, strict=False)

        outs = torch.func.vmap(run, randomness="same")(params) if self.sites else ()
        feats = torch.zeros(B, N, S, dtype=torch.float32)
        for (sid, dim), v in zip(self.sites, outs):
            v = _per_sample(v.movedim(dim + 1, -1), batched=True)              # [B, S, size]
            start = int(self.plan.site_offset[sid])
            feats[:, start:start + v.shape[-1]] = v.transpose(1, 2).float()
        for sid, v in self.inputs:
            start = int(self.plan.site_offset[sid])
            feats[:, start:start + v.shape[-1]] = v.T.float()
        return feats.reshape(B * N, S)


def _per_sample(v: torch.Tensor, batched: bool = False) -> torch.Tensor:
    """``[(B,) S, *positions, size] -> [(B,) S, size]``: the mean over pixels / tokens."""
    lead = 2 if batched else 1
    if v.dim() > lead + 1:
        v = v.reshape(*v.shape[:lead], -1, v.shape[-1]).mean(lead)
    return v


def _returning(graph: fx.Graph, nodes: list[fx.Node]) -> fx.Graph:
    """A copy of ``graph`` whose output is the tuple of ``nodes`` (dead code removed)."""
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in graph.nodes:
        if n.op == "output":
            break
        env[n] = new.node_copy(n, lambda a: env[a])
    new.output(tuple(env[n] for n in nodes))
    new.eliminate_dead_code()
    return new
