"""Metanetworks on weights: ``UNF`` (universal equivariant layers for any spec) and ``FlatMLP``.

A model takes a ``WeightSpace`` (or ``WeightSpaceFeatures``) of its spec. ``out_features=K`` gives
an invariant head ``Tensor[B, K]`` (INR classes, predicted accuracy); ``out_features=None`` gives an
equivariant head: a ``WeightSpace`` of the same spec (weight edits, optimizer updates).

Input normalization (``norm=NormStats`` from ``normalization_stats``) is one mean and one std per
tensor, which every permutation leaves alone; per-entry statistics (``mode="element"``) would break
the symmetry and are refused for equivariant models.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from .features import WeightSpaceFeatures
from .linear import EquivariantLinear
from .pointwise import ChannelNorm, Pointwise
from .pool import InvariantPool


class _Normalize(nn.Module):
    """``(w - mean) / std`` per tensor, as buffers (they move with ``.to`` and save with the model)."""

    def __init__(self, spec: WeightSpaceSpec, norm, equivariant: bool):
        super().__init__()
        self.names = list(spec.weight_names)
        mean = torch.zeros(len(self.names))
        std = torch.ones(len(self.names))
        if norm is not None:
            if equivariant and getattr(norm, "mode", "tensor") != "tensor":
                raise SpecError("per-entry normalization statistics (mode='element') break the permutation "
                                "symmetry; compute them with normalization_stats(..., mode='tensor')")
            for i, n in enumerate(self.names):
                if n in norm.mean:
                    mean[i] = norm.mean[n].reshape(()).float()
                    std[i] = norm.std[n].reshape(()).float()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: (tensors[n] - self.mean[i].to(tensors[n])) / self.std[i].to(tensors[n])
                for i, n in enumerate(self.names)}


def _as_features(model: nn.Module, w) -> tuple[WeightSpaceFeatures, WeightSpace | None]:
    if isinstance(w, WeightSpace):
        diff = None if w.spec is model.spec else model.spec.first_difference(w.spec)
        if diff:
            raise SpecError(f"{type(model).__name__}'s spec and the input's spec differ: {diff}")
        dtype = next(model.parameters()).dtype
        tensors = model.normalize({n: w.tensors[n].to(dtype) for n in model.spec.weight_names})
        return WeightSpaceFeatures(model.spec, {n: t.unsqueeze(1) for n, t in tensors.items()}), w
    if isinstance(w, WeightSpaceFeatures):
        w.check(model.spec, what=type(model).__name__)
        return w, None
    raise SpecError(f"{type(model).__name__} takes a WeightSpace or WeightSpaceFeatures, got {type(w).__name__}")


class UNF(nn.Module):
    """Universal equivariant layers (:class:`EquivariantLinear`) with ReLU between them, for any spec.

    ``channels``: hidden channels per layer; ``out_features``: invariant head width, or None for an
    equivariant head; ``head_hidden``: width of the invariant head's MLP; ``norm``: ``NormStats``
    for the input; ``channel_norm``: normalize each entry's channels after every hidden layer;
    ``probe=S``: Neural Graphs' probe features as ``2 S`` more input channels (the values of each
    entry's target and source neuron on S probe inputs, :mod:`.probe`), set with
    :meth:`probe_with`."""

    def __init__(self, spec: WeightSpaceSpec, channels: Sequence[int] = (16, 16), out_features: int | None = 10, *,
                 head_hidden: int = 128, norm=None, channel_norm: bool = False, in_channels: int = 1,
                 probe: int = 0):
        super().__init__()
        if not channels:
            raise ValueError("UNF needs at least one hidden layer (channels=(16, 16), say)")
        self.spec, self.out_features = spec, out_features
        self.normalize = _Normalize(spec, norm, equivariant=True)
        self.probe_size, self.probe = int(probe), None
        layers: list[nn.Module] = []
        prev = in_channels + 2 * self.probe_size
        for c in channels:
            if channel_norm:
                layers += [EquivariantLinear(spec, prev, c), ChannelNorm(c), Pointwise(torch.relu)]
            else:       # ReLU in place inside the layer; Identity keeps saved checkpoints' module indices
                layers += [EquivariantLinear(spec, prev, c, activation="relu"), nn.Identity()]
            prev = c
        self.body = nn.Sequential(*layers)
        if out_features is None:
            self.out = EquivariantLinear(spec, prev, 1)
        else:
            self.pool = InvariantPool(spec)
            self.head = nn.Sequential(nn.Linear(self.pool.out_features(prev), head_hidden), nn.ReLU(),
                                      nn.Linear(head_hidden, out_features))

    def probe_with(self, module: nn.Module, inputs) -> "UNF":
        """Probe features from ``module`` (an evaluator of the spec's networks) on the S probe
        ``inputs`` (a tensor ``[S, ...]``); S must be the ``probe`` this model was built with."""
        from .probe import ProbeChannels

        if not self.probe_size:
            raise SpecError("probe_with needs a UNF built with probe=S (S probe inputs)")
        channels = ProbeChannels(self.spec, module, inputs)
        if channels.num_probes != self.probe_size:
            raise SpecError(f"this UNF was built with probe={self.probe_size}, got {channels.num_probes} probe inputs")
        self.probe = channels
        return self

    def forward(self, w):
        x, original = _as_features(self, w)
        if self.probe_size and original is not None:
            if self.probe is None:
                raise SpecError("this UNF reads probe features: call model.probe_with(module, probe_inputs) first")
            extra = self.probe(original)
            x = WeightSpaceFeatures(self.spec, {n: torch.cat([t, extra[n].to(t)], 1) for n, t in x.tensors.items()})
        h = self.body(x)
        if self.out_features is None:
            y = self.out(h)
            return y.to_weightspace(original) if original is not None else y
        return self.head(self.pool(h))


class FlatMLP(nn.Module):
    """The non-equivariant baseline: an MLP on the flattened (normalized) weights."""

    def __init__(self, spec: WeightSpaceSpec, hidden: Sequence[int] = (256, 256), out_features: int | None = 10, *,
                 norm=None, dropout: float = 0.0):
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.normalize = _Normalize(spec, norm, equivariant=False)
        self.element_norm = norm if norm is not None and getattr(norm, "mode", "tensor") != "tensor" else None
        dims = [spec.num_weights, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        layers.append(nn.Linear(dims[-1], spec.num_weights if out_features is None else out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, w):
        if isinstance(w, WeightSpaceFeatures):
            w = w.to_weightspace()
        if not isinstance(w, WeightSpace):
            raise SpecError(f"FlatMLP takes a WeightSpace, got {type(w).__name__}")
        diff = None if w.spec is self.spec else self.spec.first_difference(w.spec)
        if diff:
            raise SpecError(f"FlatMLP's spec and the input's spec differ: {diff}")
        if self.element_norm is not None:
            w = self.element_norm.apply(w)
        dtype = next(self.parameters()).dtype
        t = self.normalize({n: w.tensors[n].to(dtype) for n in self.spec.weight_names})
        flat = torch.cat([t[n].reshape(w.batch_size, -1) for n in self.spec.weight_names], 1)
        y = self.net(flat)
        return WeightSpace.unflatten(y, self.spec, w) if self.out_features is None else y
