"""NFN's layers (Zhou et al. 2023) for MLP and CNN weight spaces, as specs rather than new code.

NFN's HNP layer (hidden neurons permutable, input and output neurons fixed) is exactly the full
equivariant basis of the MLP's / CNN's own spec, i.e. :class:`~weightspace.nn.EquivariantLinear`.
NFN's NP layer (DWSNets' as well) also treats the input and output neurons as permutable: a larger
group, hence fewer basis terms. Here that is a different spec: :func:`io_permutable` gives the
input and output axes their own groups (``"__input"``, ``"__output"``), and the same layer code runs
on it. NP models are then only NP-equivariant; ``io_embed`` adds NFN's learned input / output
position embeddings, which break the extra symmetry back to the network's true one.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch
from einops import rearrange
from torch import nn

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ..spec.types import GroupSpec, OpKind, Segment
from .features import WeightSpaceFeatures
from .linear import EquivariantLinear
from .pool import InvariantPool

INPUT, OUTPUT = "__input", "__output"
_NFN_OPS = {OpKind.LINEAR, OpKind.ACTIVATION, OpKind.REARRANGE}


def check_mlp_or_cnn(spec: WeightSpaceSpec) -> None:
    """NFN's layers cover chains of Linear / conv layers with pointwise activations; anything else
    (residuals, norms, attention, concatenation, heads) raises naming the op and pointing to UNF."""
    if spec.dataflow is None:
        raise SpecError("NFN needs a traced spec (WeightSpaceSpec.from_module or .mlp); use weightspace.nn.UNF "
                        "for hand-written specs")
    for op in spec.dataflow.ops:
        if op.kind not in _NFN_OPS:
            raise SpecError(f"NFN's layers cover MLP and CNN weight spaces; this spec has a '{op.kind}' op "
                            f"({op.name}). Use weightspace.nn.UNF, whose layers cover any traced spec")
    for g in spec.groups:
        if g.heads is not None:
            raise SpecError(f"NFN's layers have no head structure (group '{g.name}'); use weightspace.nn.UNF")


def io_permutable(spec: WeightSpaceSpec) -> WeightSpaceSpec:
    """The spec with the network's input and output neurons made permutable (NFN / DWSNets' NP)."""
    check_mlp_or_cnn(spec)
    flow = spec.dataflow
    new_axes: dict[str, list] = {p.name: list(p.axes) for p in spec.params}
    sizes: dict[str, int] = {}
    for op in flow.ops:
        if op.kind != OpKind.LINEAR:
            continue
        for use in op.params:
            p = spec[use.name]
            for k, dim in enumerate(use.dims):
                if dim == "in" and flow.site(op.inputs[0].site).kind == "input" and p.axes[k] is None:
                    group, n = INPUT, flow.site(op.inputs[0].site).size
                elif dim in ("out", "neuron") and flow.site(op.output).kind == "output" and p.axes[k] is None:
                    group, n = OUTPUT, flow.site(op.output).size
                else:
                    continue
                if p.shape[k] != n:
                    raise SpecError(f"'{use.name}' axis {k} has {p.shape[k]} entries for {n} neurons")
                new_axes[use.name][k] = (Segment(group, n),)
                sizes[group] = n
    params = tuple(replace(p, axes=tuple(new_axes[p.name]), scales=()) for p in spec.params)
    groups = spec.groups + tuple(GroupSpec(g, n) for g, n in sizes.items())
    return WeightSpaceSpec(params, groups, (), spec.dataflow)


class GaussianFourierFeatures(nn.Module):
    """``x -> [x, sin(2 pi B x), cos(2 pi B x)]`` per entry, with fixed ``B ~ N(0, scale^2)`` of
    ``mapping`` frequencies per input channel (NFN's input encoding); pointwise, so equivariant."""

    def __init__(self, in_channels: int, mapping: int = 16, scale: float = 10.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("freqs", torch.randn(in_channels, mapping, generator=generator) * scale)
        self.out_channels = in_channels * (1 + 2 * mapping)

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        def enc(t):
            z = torch.einsum("bc...,cm->bcm...", t, self.freqs.to(t))          # [B, C, mapping, *shape]
            z = 2 * math.pi * rearrange(z, "b c m ... -> b (c m) ...")
            return torch.cat([t, torch.sin(z), torch.cos(z)], 1)
        return x.map(enc)


class IOEmbedding(nn.Module):
    """Learned embeddings of the input and output neurons, added to every tensor that indexes them."""

    def __init__(self, spec: WeightSpaceSpec, channels: int):
        super().__init__()
        self.spec, self.where = spec, []
        self.tables = nn.ParameterDict()
        for g in (INPUT, OUTPUT):
            if any(gs.name == g for gs in spec.groups):
                self.tables[g] = nn.Parameter(torch.randn(channels, spec.group(g).size) * 0.1)
        for name in spec.weight_names:
            for action in spec.axis_actions(name):
                for group, *_ in action.segments:
                    if group in self.tables:
                        self.where.append((name, action.from_right, group))

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        out = dict(x.tensors)
        for name, axis, group in self.where:
            t = out[name]
            shape = [1] * t.dim()
            shape[1], shape[axis] = t.shape[1], t.shape[axis]
            out[name] = t + self.tables[group].to(t).view(shape)
        return WeightSpaceFeatures(x.spec, out)


class NFN(nn.Module):
    """NFN's model for MLP and CNN weight spaces: ``mode="hnp"`` (the exact symmetry: input and
    output neurons fixed) or ``"np"`` (all neurons permutable, fewer parameters). ``fourier``:
    Gaussian Fourier features of the input weights (frequencies per channel, 0 for none);
    ``io_embed``: learned input / output position embeddings (NP only)."""

    def __init__(self, spec: WeightSpaceSpec, channels: Sequence[int] = (16, 16), out_features: int | None = 10, *,
                 mode: str = "hnp", fourier: int = 0, io_embed: bool = False, head_hidden: int = 128,
                 norm=None, generator: torch.Generator | None = None):
        super().__init__()
        if mode not in ("np", "hnp"):
            raise ValueError(f"mode must be 'np' or 'hnp', got {mode!r}")
        check_mlp_or_cnn(spec)
        from .models import _Normalize

        self.spec, self.out_features, self.mode = spec, out_features, mode
        self.layer_spec = io_permutable(spec) if mode == "np" else spec
        self.normalize = _Normalize(spec, norm, equivariant=True)
        prev = 1
        pre: list[nn.Module] = []
        if fourier:
            pre.append(GaussianFourierFeatures(1, fourier, generator=generator))
            prev = pre[-1].out_channels
        if io_embed:
            if mode != "np":
                raise ValueError("io_embed only applies to mode='np' (HNP keeps input and output neurons fixed)")
            pre.append(IOEmbedding(self.layer_spec, prev))
        layers: list[nn.Module] = []
        for c in channels:
            # ReLU in place inside the layer; Identity keeps saved checkpoints' module indices
            layers += [EquivariantLinear(self.layer_spec, prev, c, activation="relu"), nn.Identity()]
            prev = c
        self.body = nn.Sequential(*pre, *layers)
        if out_features is None:
            self.out = EquivariantLinear(self.layer_spec, prev, 1)
        else:
            self.pool = InvariantPool(self.layer_spec)
            self.head = nn.Sequential(nn.Linear(self.pool.out_features(prev), head_hidden), nn.ReLU(),
                                      nn.Linear(head_hidden, out_features))

    def forward(self, w: WeightSpace):
        if not isinstance(w, WeightSpace):
            raise SpecError(f"NFN takes a WeightSpace, got {type(w).__name__}")
        diff = None if w.spec is self.spec else self.spec.first_difference(w.spec)
        if diff:
            raise SpecError(f"NFN's spec and the input's spec differ: {diff}")
        dtype = next(self.parameters()).dtype
        t = self.normalize({n: w.tensors[n].to(dtype) for n in self.spec.weight_names})
        h = self.body(WeightSpaceFeatures(self.layer_spec, {n: v.unsqueeze(1) for n, v in t.items()}))
        if self.out_features is None:
            y = self.out(h)
            return WeightSpace(self.spec, {**w.tensors, **{n: y.tensors[n][:, 0] for n in self.spec.weight_names}})
        return self.head(self.pool(h))
