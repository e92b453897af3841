"""Node and edge encoders: parameter-graph features -> hidden states.

Design decisions:

* Value features (``x``: biases / norm parameters, ``edge_attr``: weights / kernels, ``probe``) go
  through linear maps whose input width is inferred on first use (:class:`PadLinear`). Later inputs
  that are narrower (an architecture with smaller kernels, or a member of a mixed batch seen alone)
  are zero-padded to that width, which is exactly what ``ws.to_graph`` does inside a mixed batch, so
  a network gets the same encoding alone and in any batch. Wider inputs are refused.
* Categorical features are embeddings of the fixed vocabularies (``NODE_TYPES``, ``EDGE_TYPES``,
  ``ACTIVATIONS``), so their widths never depend on the data.
* Positional features use sinusoids of integers (layer depth; the identity of input / output neurons),
  followed by a learned linear map: they serve any depth and any number of inputs / outputs. Hidden
  neurons carry ``node_pos = -1`` and get no positional feature, so permuting them is a symmetry.
* Every family is switchable (``positional``, ``types``, ``probe``, ``edge_part``); all parts are
  summed, then one MLP. Nothing here mixes nodes, so the encoders are permutation equivariant by
  construction.
* Chunked edges: a kernel longer than the graph's edge width is split into parallel edges between
  the same two neurons, numbered by ``edge_part`` (see :mod:`weightspace.graph.build`). The edge
  encoder adds a fixed, parameter-free sinusoidal code of the part index, shifted so that part 0 codes
  to exactly zero: graphs without chunks (every part 0) encode exactly as before, and models and
  checkpoints gain no parameters; the MLP that follows learns to read the code. Parts move with their
  edges under every node relabeling, so the code keeps the encoder equivariant. ``edge_part=False``
  ignores the numbering. Part indices may have any integer dtype.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter, is_lazy

from ...graph.vocab import ACTIVATIONS, EDGE_TYPES, NODE_TYPES
from ...spec.errors import SpecError


def sinusoid(values: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``[*] -> [*, dim]`` sin / cos of integer ``values`` at geometric frequencies (as in Transformers)."""
    half = dim // 2
    freq = torch.exp(-math.log(1e4) * torch.arange(half, dtype=dtype, device=values.device) / max(half, 1))
    ang = values.to(dtype).unsqueeze(-1) * freq
    return torch.cat([ang.sin(), ang.cos()], -1)


def part_code(part: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``[M] -> [M, dim]``: a sinusoidal code of chunk indices (any integer dtype) that is exactly zero
    for part 0 (the cosines have 1 subtracted), so unsplit edges are left as they were."""
    half = (dim + 1) // 2
    code = sinusoid(part, 2 * half, dtype)[:, :dim]
    code[:, half:] -= 1
    return code


def pad_to(t: torch.Tensor, width: int, what: str) -> torch.Tensor:
    """``[R, F] -> [R, width]`` with zero columns appended; refuses ``F > width``."""
    if t.shape[-1] > width:
        raise SpecError(f"{what} has {t.shape[-1]} columns but this model was built for {width} (inferred on "
                        f"its first batch); run the first batch with the widest architecture")
    return t if t.shape[-1] == width else nn.functional.pad(t, (0, width - t.shape[-1]))


class PadLinear(nn.Module):
    """``Linear(-1, out)``: the input width is inferred on first use; narrower inputs later are
    zero-padded to it (exact: padded columns meet weights that multiply zeros)."""

    def __init__(self, out_features: int, what: str = "input", bias: bool = True):
        super().__init__()
        self.lin, self.what = nn.LazyLinear(out_features, bias=bias), what

    @property
    def in_features(self) -> int | None:
        return None if is_lazy(self.lin.weight) else self.lin.in_features

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        width = self.in_features
        if width is not None:
            t = pad_to(t, width, self.what)
        return self.lin(t.to(self.lin.weight.dtype) if width is not None else t)


class LazyOutLinear(LazyModuleMixin, nn.Module):
    """``Linear(in_features, width)`` with ``width`` fixed on the first call ``forward(h, width)``
    (the equivariant heads write back as many slots as the encoders read); later calls return the
    first ``width`` columns (a narrower graph) and refuse a wider one."""

    cls_to_become = None

    def __init__(self, in_features: int):
        super().__init__()
        self.in_features = in_features
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter()

    def initialize_parameters(self, h: torch.Tensor, width: int) -> None:  # called by LazyModuleMixin
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.weight.materialize((width, self.in_features))
                self.bias.materialize((width,))
                bound = 1 / math.sqrt(self.in_features)
                nn.init.uniform_(self.weight, -bound, bound)
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: torch.Tensor, width: int) -> torch.Tensor:
        out = nn.functional.linear(h, self.weight, self.bias)
        if width > out.shape[-1]:
            raise SpecError(f"the graph needs {width} feature slots but this head writes {out.shape[-1]} (fixed on "
                            f"its first batch); run the first batch with the widest architecture")
        return out if width == out.shape[-1] else out[..., :width]


def _mlp(hidden: int, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(hidden, hidden))
        if i < depth - 1:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class NodeEncoder(nn.Module):
    """Graph nodes -> ``h [N, hidden]``.

    Reads ``x [N, Fn]``, and as switched on: ``node_type`` and ``activation`` (``types``), ``layer``
    and ``node_pos`` (``positional``), ``probe [N, S]`` (``probe``; the graph must carry it, see
    ``ws.to_graph(..., probe=...)``)."""

    def __init__(self, hidden: int, *, positional: bool = True, types: bool = True, probe: bool = False,
                 pos_dim: int = 16):
        super().__init__()
        self.positional, self.types, self.probe, self.pos_dim = positional, types, probe, pos_dim
        self.values = PadLinear(hidden, "node features x")
        if types:
            self.node_type = nn.Embedding(len(NODE_TYPES), hidden)
            self.activation = nn.Embedding(len(ACTIVATIONS), hidden)
        if positional:
            self.layer = nn.Linear(pos_dim, hidden, bias=False)
            self.io_pos = nn.Linear(pos_dim, hidden, bias=False)
        if probe:
            self.probe_values = PadLinear(hidden, "probe features")
        self.mlp = nn.Sequential(nn.SiLU(), _mlp(hidden))

    @property
    def dtype(self) -> torch.dtype:
        return self.mlp[1][0].weight.dtype

    @property
    def width(self) -> int | None:
        """Width of ``x`` inferred on the first batch (None before)."""
        return self.values.in_features

    def forward(self, graph) -> torch.Tensor:
        dt = self.dtype
        h = self.values(graph.x.to(dt))
        if self.types:
            h = h + self.node_type(graph.node_type.int()) + self.activation(graph.activation.int())
        if self.positional:
            h = h + self.layer(sinusoid(graph.layer, self.pos_dim, dt))
            pos = graph.node_pos
            h = h + self.io_pos(sinusoid(pos.clamp_min(0), self.pos_dim, dt)) * (pos >= 0).unsqueeze(-1).to(dt)
        if self.probe:
            if getattr(graph, "probe", None) is None:
                raise SpecError("this model reads probe features: build the graph with ws.to_graph(..., probe=...)")
            h = h + self.probe_values(graph.probe.to(dt))
        return self.mlp(h)


class EdgeEncoder(nn.Module):
    """Graph edges -> ``e [M, hidden]``: ``edge_attr [M, Fe]``, and as switched on ``edge_type``
    (``types``), the depth of the edge's target neuron (``positional``) and the chunk index of a split
    kernel (``edge_part``: :func:`part_code`, zero for unsplit edges, no parameters; a plain attribute,
    so it can also be switched on a built model)."""

    def __init__(self, hidden: int, *, positional: bool = True, types: bool = True, edge_part: bool = True,
                 pos_dim: int = 16):
        super().__init__()
        self.positional, self.types, self.edge_part, self.pos_dim = positional, types, edge_part, pos_dim
        self.values = PadLinear(hidden, "edge features edge_attr")
        if types:
            self.edge_type = nn.Embedding(len(EDGE_TYPES), hidden)
        if positional:
            self.layer = nn.Linear(pos_dim, hidden, bias=False)
        self.mlp = nn.Sequential(nn.SiLU(), _mlp(hidden))

    @property
    def dtype(self) -> torch.dtype:
        return self.mlp[1][0].weight.dtype

    @property
    def width(self) -> int | None:
        return self.values.in_features

    def forward(self, graph) -> torch.Tensor:
        dt = self.dtype
        e = self.values(graph.edge_attr.to(dt))     # a fresh [M, H]: the sums below go in place
        if self.types:
            e = e.add_(self.edge_type(graph.edge_type.int()))      # graphs store codes as int8
        if self.positional:
            depth = self.layer(sinusoid(graph.layer, self.pos_dim, dt))          # per node, then gathered
            e = e.add_(depth.index_select(0, graph.edge_index[1]))
        part = getattr(graph, "edge_part", None) if self.edge_part else None
        if part is not None and bool(part.any()):              # only graphs with split kernels
            table = part_code(torch.arange(int(part.max()) + 1, device=part.device), e.shape[-1], dt)
            e = e.add_(table.index_select(0, part.int()))     # one row per part index, gathered
        return self.mlp(e)
