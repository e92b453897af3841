"""The metanetworks behind a learned optimizer: features ``[B, C, *shape]`` -> one update channel.

Every meta-model maps :class:`~weightspace.nn.WeightSpaceFeatures` of the optimized network's spec
(C feature channels) to features with one channel (the learned update direction), and is built by
name from ``(spec, in_channels, **options)`` so a trained one can be rebuilt for another network:

* ``"per-parameter"`` — :class:`PerParameterMLP`, the classic baseline (Metz et al.): one small MLP
  applied to every entry's feature vector alone. Spec-free; it sees no other entry.
* ``"unf"`` — :class:`EquivariantUpdate` with learned input / output position embeddings: layers of
  :class:`~weightspace.nn.EquivariantLinear` on :func:`open_io_spec` (the spec with the network's
  input and output neurons made permutable, the NP relaxation) for any traced spec, BatchNorm and
  residuals included. Relaxing the input / output axes keeps the layer small (a fixed axis is folded
  into channels, and the exact basis of a 64-input MLP already has millions of coefficients), and the
  embeddings break the relaxed symmetry back to the network's true one.
* ``"unf-exact"`` — the same layers on the exact spec (the full basis; large for wide inputs).
* ``"nfn"`` — NFN's NP layers (:func:`weightspace.nn.io_permutable`), MLPs and CNNs only.
* ``"gmn"`` — :class:`GraphUpdate`, a :class:`~weightspace.nn.GMN` on the parameter graph with one
  graph feature slot per channel, decoded by its equivariant head.

Coefficient shapes depend on the spec's topology (pieces, kernel sizes), never on the hidden widths,
so one trained meta-model serves every width of an architecture.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from ..errors import UsageError
from ..nn.features import WeightSpaceFeatures
from ..nn.linear import EquivariantLinear
from ..nn.nfn import INPUT, OUTPUT, IOEmbedding, io_permutable
from ..space import WeightSpace
from ..spec.spec import WeightSpaceSpec
from ..spec.types import GroupSpec, OpKind, Segment


def open_io_spec(spec: WeightSpaceSpec) -> WeightSpaceSpec:
    """``spec`` with the axes that index the network's input or output neurons given the groups
    ``"__input"`` / ``"__output"`` (as :func:`weightspace.nn.io_permutable`, for any traced spec).
    A hand-written spec (no dataflow) is returned unchanged."""
    flow = spec.dataflow
    if flow is None:
        return spec
    axes = {p.name: list(p.axes) for p in spec.params}
    sizes: dict[str, int] = {}
    for op in flow.ops:
        if op.kind != OpKind.LINEAR or len(op.inputs) != 1:
            continue
        src, dst = flow.site(op.inputs[0].site), flow.site(op.output)
        for use in op.params:
            p = spec[use.name]
            for k, dim in enumerate(use.dims):
                if p.axes[k] is not None:
                    continue
                if dim == "in" and src.kind == "input" and op.inputs[0].inner == 1 and p.shape[k] == src.size:
                    group = INPUT
                elif dim in ("out", "neuron") and dst.kind == "output" and p.shape[k] == dst.size:
                    group = OUTPUT
                else:
                    continue
                axes[use.name][k] = (Segment(group, p.shape[k]),)
                sizes[group] = p.shape[k]
    params = tuple(replace(p, axes=tuple(axes[p.name]), scales=()) for p in spec.params)
    groups = spec.groups + tuple(GroupSpec(g, n) for g, n in sizes.items())
    return WeightSpaceSpec(params, groups, (), spec.dataflow)


class PerParameterMLP(nn.Module):
    """``[B, C, *shape] -> [B, 1, *shape]``: an MLP over each entry's channels (``hidden`` wide,
    ``layers`` hidden layers), the same for every entry of every tensor."""

    def __init__(self, spec: WeightSpaceSpec | None = None, in_channels: int = 10, *, hidden: int = 32,
                 layers: int = 2, out_scale: float = 0.1):
        super().__init__()
        dims = [in_channels] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.ReLU()]
        mods.append(nn.Linear(dims[-1], 1))
        with torch.no_grad():
            mods[-1].weight.mul_(out_scale)
            mods[-1].bias.zero_()
        self.net = nn.Sequential(*mods)

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        dtype = self.net[0].weight.dtype
        return x.map(lambda t: self.net(t.to(dtype).movedim(1, -1)).movedim(-1, 1))


class EquivariantUpdate(nn.Module):
    """Layers of :class:`~weightspace.nn.EquivariantLinear` (``channels`` wide, ReLU between) ending
    in one channel, on ``layer_spec`` (the spec, or a relaxation of it); ``io_embed`` adds learned
    input / output neuron embeddings after the first layer (only where ``layer_spec`` relaxed them)."""

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, *, layer_spec: WeightSpaceSpec | None = None,
                 channels: Sequence[int] = (16, 16), io_embed: bool = True, out_scale: float = 0.1):
        super().__init__()
        if not channels:
            raise UsageError("an equivariant meta-model needs at least one hidden layer", "channels=(16, 16)")
        self.spec = spec
        self.layer_spec = layer_spec if layer_spec is not None else spec
        relaxed = any(g.name in (INPUT, OUTPUT) for g in self.layer_spec.groups)
        layers: list[nn.Module] = [EquivariantLinear(self.layer_spec, in_channels, channels[0])]
        self.embed = IOEmbedding(self.layer_spec, channels[0]) if io_embed and relaxed else None
        prev = channels[0]
        for c in channels[1:]:
            layers.append(EquivariantLinear(self.layer_spec, prev, c))
            prev = c
        layers.append(EquivariantLinear(self.layer_spec, prev, 1))
        with torch.no_grad():
            for w in layers[-1].weights:
                w.mul_(out_scale)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        x.check(self.spec, what="meta-model")
        h = WeightSpaceFeatures(self.layer_spec, x.tensors)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i == 0 and self.embed is not None:
                h = self.embed(h)
            if i < len(self.layers) - 1:
                h = h.map(torch.relu)
        return WeightSpaceFeatures(self.spec, h.tensors)


class GraphUpdate(nn.Module):
    """A :class:`~weightspace.nn.GMN` on the parameter graph: each feature channel is drawn as its
    own graph (``ws.to_graph``) and their node / edge slots are concatenated; the equivariant head
    writes one channel back into the graph's slots, read back with ``ws.from_graph``."""

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, *, hidden: int = 32, layers: int = 2):
        super().__init__()
        from ..nn.graph import GMN

        self.spec, self.in_channels = spec, in_channels
        self.gmn = GMN(hidden=hidden, layers=layers, out_features=None)
        with torch.no_grad():                      # materialize the lazy encoders and head
            zeros = {n: torch.zeros(1, in_channels, *spec[n].shape) for n in spec.weight_names}
            self(WeightSpaceFeatures(spec, zeros))

    def _graph(self, x: WeightSpaceFeatures, c: int):
        from ..graph.build import to_graph

        tensors = {}
        for p in self.spec.params:
            t = x.tensors.get(p.name)
            tensors[p.name] = t[:, c] if t is not None else torch.zeros(x.batch_size, *p.shape, dtype=x.dtype)
        return to_graph(WeightSpace(self.spec, tensors))

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        from ..graph.build import from_graph

        x.check(self.spec, what="meta-model")
        graphs = [self._graph(x, c) for c in range(x.channels)]
        base = graphs[0]
        merged = base.clone()
        merged.x = torch.cat([g.x for g in graphs], 1)
        merged.edge_attr = torch.cat([g.edge_attr for g in graphs], 1)
        h, e = self.gmn.embed(merged)
        out = from_graph(self.gmn.head(h, e, base), self.spec)
        return WeightSpaceFeatures(self.spec, {n: out.tensors[n].unsqueeze(1) for n in self.spec.weight_names})


META_MODELS = ("per-parameter", "unf", "unf-exact", "nfn", "gmn")


def build_meta_model(name: str, spec: WeightSpaceSpec, in_channels: int, **options) -> nn.Module:
    """The meta-model called ``name`` (one of :data:`META_MODELS`) for ``spec``."""
    if name == "per-parameter":
        return PerParameterMLP(spec, in_channels, **options)
    if name == "unf":
        return EquivariantUpdate(spec, in_channels, layer_spec=open_io_spec(spec), **options)
    if name == "unf-exact":
        return EquivariantUpdate(spec, in_channels, layer_spec=spec, **{"io_embed": False, **options})
    if name == "nfn":
        return EquivariantUpdate(spec, in_channels, layer_spec=io_permutable(spec), **{"io_embed": False, **options})
    if name == "gmn":
        return GraphUpdate(spec, in_channels, **options)
    raise UsageError(f"unknown meta-model {name!r}; known: {', '.join(META_MODELS)} (or pass an nn.Module)",
                     "meta_model")
