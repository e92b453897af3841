"""Graph metanetworks: ``NGGNN``, ``NGT`` (Neural Graphs, Kofinas et al. ICLR 2024) and ``GMN``
(Graph Metanetworks, Lim et al. ICLR 2024) on the parameter graphs of ``ws.to_graph``.

A model takes the graph (a ``Batch`` from ``ws.to_graph``, possibly mixing architectures, or one
``Data``) or a ``WeightSpace`` (converted with ``ws.to_graph``), and returns ``Tensor[B, K]`` for
``out_features=K`` (invariant readout) or, for ``out_features=None``, per-node and per-edge outputs
in the graph's feature slots: a ``WeightSpace`` of the same spec when the input was a WeightSpace (or
``spec=`` is given; a list of specs for a mixed batch gives a list), else the output graph for
``ws.from_graph``.

All three share: encoders (:mod:`.encode`, input widths inferred on the first batch; run one batch
before building the optimizer, as for any lazy module), a stack of layers (:mod:`.layers`) updating
node and edge states, and a head (:mod:`.readout`). Every operation is per node, per edge, or a
sum / mean / max / softmax over a node's edges or a graph's nodes, so the models are equivariant
to any node relabeling that maps the graph to itself, which is what the network's permutation
symmetries do (``ws.node_permutation``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ...graph.build import from_graph, to_graph
from ...space import WeightSpace
from ...spec.errors import SpecError
from .encode import EdgeEncoder, NodeEncoder
from .layers import GMNLayer, GraphPlans, NGGNNLayer, RelationalAttention
from .readout import EquivariantHead, InvariantReadout


def _standardize(tensors, norm) -> dict:
    return {n: (t - norm.mean[n].to(t)) / norm.std[n].to(t) if n in norm.mean else t for n, t in tensors.items()}


def as_graph(w: Any, spec=None, norm=None) -> tuple[Any, Any]:
    """``(graph, spec or None)`` from a WeightSpace, a ``Data`` / ``Batch``, or a list of
    ``(state dict, spec)`` pairs (a mixed batch; the specs come along). ``norm``: ``NormStats``
    (per tensor) to standardize the weights with before the graph is built."""
    if isinstance(w, WeightSpace):
        if norm is not None:
            w = WeightSpace(w.spec, _standardize(w.tensors, norm))
        return to_graph(w), w.spec if spec is None else spec
    if isinstance(w, (list, tuple)) and w and isinstance(w[0], tuple):
        pairs = [(_standardize(sd, norm) if norm is not None else sd, s) for sd, s in w]
        return to_graph(pairs), [s for _, s in w] if spec is None else spec
    if hasattr(w, "edge_index") and hasattr(w, "x"):
        if norm is not None:
            raise SpecError("this model standardizes weights (norm=...): pass a WeightSpace or (state dict, spec) "
                            "pairs, not a graph")
        return w, spec
    raise SpecError(f"graph metanetworks take a WeightSpace, a graph from ws.to_graph or (state dict, spec) pairs, "
                    f"got {type(w).__name__}")


class GraphMetanet(nn.Module):
    """Encoders, ``layers`` message-passing layers made by ``make_layer(hidden)``, and a head.

    ``positional`` / ``types`` / ``probe`` switch the feature families of the encoders
    (:class:`NodeEncoder`); ``head_hidden``: width of the invariant head's MLP; ``norm``: per-tensor
    ``NormStats`` (``normalization_stats(..., mode="tensor")``) to standardize WeightSpace inputs with
    (one mean and std per tensor, which every permutation leaves alone)."""

    def __init__(self, make_layer, hidden: int, layers: int, out_features: int | None, *, positional: bool = True,
                 types: bool = True, probe: bool = False, head_hidden: int | None = None, norm=None):
        super().__init__()
        if norm is not None and getattr(norm, "mode", "tensor") != "tensor":
            raise SpecError("per-entry normalization statistics (mode='element') break the permutation symmetry; "
                            "compute them with normalization_stats(..., mode='tensor')")
        self.hidden, self.out_features, self.norm = hidden, out_features, norm
        self.node_encoder = NodeEncoder(hidden, positional=positional, types=types, probe=probe)
        self.edge_encoder = EdgeEncoder(hidden, positional=positional, types=types)
        self.layers = nn.ModuleList([make_layer(hidden) for _ in range(layers)])
        self.head = (InvariantReadout(hidden, out_features, head_hidden) if out_features is not None
                     else EquivariantHead(hidden))

    def embed(self, graph) -> tuple[torch.Tensor, torch.Tensor]:
        """Final node and edge states ``(h [N, hidden], e [M, hidden])`` of a graph."""
        h, e = self.node_encoder(graph), self.edge_encoder(graph)
        for layer in self.layers:
            h, e = layer(h, e, graph.edge_index)
        return h, e

    def probe_with(self, module: nn.Module, inputs: Any) -> "GraphMetanet":
        """Compute probe features (``probe=True``) from WeightSpace inputs: every neuron's value on
        the S probe ``inputs`` (a tensor ``[S, ...]``), with ``module`` as the evaluator of the
        networks (run batched, :class:`~weightspace.graph.batched_probe.ProbePlan`, one plan per
        spec). Probes see the raw weights, before ``norm``. Returns the model."""
        if not self.node_encoder.probe:
            raise SpecError("probe_with needs a model built with probe=True")
        self._probe_source, self._probe_plans = (module, inputs), {}
        return self

    def _probe(self, w: WeightSpace) -> torch.Tensor:
        from ...graph.batched_probe import ProbePlan

        plans = self._probe_plans
        if id(w.spec) not in plans:
            plans[id(w.spec)] = (w.spec, ProbePlan(*self._probe_source[:1], w.spec, self._probe_source[1]))
        return plans[id(w.spec)][1](w.detach().to(torch.float32))

    @torch.compiler.disable
    def _graph(self, w: Any, spec=None):
        """The graph (probe features attached) and the spec; index arithmetic, never compiled: under
        ``torch.compile`` this runs eagerly and the message passing after it is compiled."""
        graph, spec = as_graph(w, spec, self.norm)
        if getattr(self, "_probe_source", None) is not None and isinstance(w, WeightSpace):
            graph.probe = self._probe(w)
        return graph, spec

    def forward(self, w: Any, spec=None):
        graph, spec = self._graph(w, spec)
        h, e = self.embed(graph)
        out = self.head(h, e, graph)
        if self.out_features is not None or spec is None:
            return out
        return from_graph(out, spec)


class NGGNN(GraphMetanet):
    """Neural Graphs' NG-GNN: PNA-style message passing with edge updates (:class:`NGGNNLayer`).
    The paper's MNIST-INR setting is ``hidden=32, layers=4``."""

    def __init__(self, hidden: int = 32, layers: int = 4, out_features: int | None = 10, *,
                 aggregators: Sequence[str] = ("mean", "min", "max", "std"), **options):
        super().__init__(lambda h: NGGNNLayer(h, aggregators), hidden, layers, out_features, **options)

    def embed(self, graph) -> tuple[torch.Tensor, torch.Tensor]:
        h, e = self.node_encoder(graph), self.edge_encoder(graph)
        plans = GraphPlans.of(graph.edge_index, h.shape[0], self.hidden, h.dtype)
        for layer in self.layers:
            h, e = layer(h, e, graph.edge_index, plans)
        return h, e


class NGT(GraphMetanet):
    """Neural Graphs' NG-T: relational-transformer layers (:class:`RelationalAttention`), sparse
    attention over the parameter graph's edges with keys and values conditioned on edge states."""

    def __init__(self, hidden: int = 64, layers: int = 4, heads: int = 8, out_features: int | None = 10, **options):
        super().__init__(lambda h: RelationalAttention(h, heads), hidden, layers, out_features, **options)


class GMN(GraphMetanet):
    """Graph Metanetworks' GNN: edge-centric graph-network blocks (:class:`GMNLayer`)."""

    def __init__(self, hidden: int = 64, layers: int = 4, out_features: int | None = 10, **options):
        super().__init__(GMNLayer, hidden, layers, out_features, **options)
