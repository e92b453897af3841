"""``WeightSpaceFeatures``: channels per weight entry, with the spec travelling beside the tensors.

The way e3nn's irreps travel with a tensor, the spec travels with the features: every layer checks
it, and the group acts on features exactly as on weights (actions index parameter axes from the
right, so ``ws.act(features, spec, g)`` permutes each channel alike). Only learned-on entries
(parameters and norm statistics) carry features; plain buffers such as ``num_batches_tracked`` do
not.
"""
from __future__ import annotations

import numbers
from typing import Callable, Mapping

import torch

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec


class WeightSpaceFeatures:
    """``name -> Tensor[B, C, *shape]`` over the learned-on entries of ``spec`` (C channels per entry)."""

    __slots__ = ("spec", "tensors")

    def __init__(self, spec: WeightSpaceSpec, tensors: Mapping[str, torch.Tensor]):
        lead = None
        for name in spec.weight_names:
            if name not in tensors:
                raise SpecError(f"features are missing '{name}' (shape {spec[name].shape}); every learned-on entry "
                                f"of the spec needs a feature tensor [B, C, *shape]")
            t = tensors[name]
            shape = spec[name].shape
            if t.dim() != len(shape) + 2 or tuple(t.shape[2:]) != shape:
                raise SpecError(f"features of '{name}' have shape {tuple(t.shape)}, expected [B, C, *{shape}]")
            if lead is None:
                lead = tuple(t.shape[:2])
            elif tuple(t.shape[:2]) != lead:
                raise SpecError(f"features of '{name}' have [B, C] = {list(t.shape[:2])}, earlier entries have "
                                f"{list(lead)}")
        extra = [k for k in tensors if k not in spec.weight_names]
        if extra:
            raise SpecError(f"features have entry '{extra[0]}' that is not a learned-on entry of the spec")
        self.spec = spec
        self.tensors = {n: tensors[n] for n in spec.weight_names}

    # ------------------------------------------------------------------------------ conversion
    @classmethod
    def from_weightspace(cls, w: WeightSpace) -> "WeightSpaceFeatures":
        """One channel: ``[B, *shape] -> [B, 1, *shape]`` for every learned-on entry."""
        return cls(w.spec, {n: w.tensors[n].unsqueeze(1) for n in w.spec.weight_names})

    def to_weightspace(self, buffers: WeightSpace | None = None) -> WeightSpace:
        """Back to a WeightSpace (one channel); plain buffers come from ``buffers`` or are zeros."""
        if self.channels != 1:
            raise SpecError(f"to_weightspace needs one channel, these features have {self.channels}")
        b = self.batch_size
        out = {}
        for p in self.spec.params:
            if p.name in self.tensors:
                out[p.name] = self.tensors[p.name][:, 0]
            elif buffers is not None:
                out[p.name] = buffers.tensors[p.name]
            else:
                out[p.name] = torch.zeros(b, *p.shape, dtype=getattr(torch, p.dtype, torch.float32), device=self.device)
        return WeightSpace(self.spec, out)

    # ------------------------------------------------------------------------------ views
    def _first(self) -> torch.Tensor:
        return next(iter(self.tensors.values()))

    @property
    def batch_size(self) -> int:
        return self._first().shape[0]

    @property
    def channels(self) -> int:
        return self._first().shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self._first().dtype

    @property
    def device(self) -> torch.device:
        return self._first().device

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def items(self):
        return self.tensors.items()

    def __len__(self) -> int:
        return self.batch_size

    def check(self, spec: WeightSpaceSpec, channels: int | None = None, what: str = "layer") -> None:
        """Raise naming the first difference when these features do not belong to ``spec`` (or do not
        have ``channels`` channels)."""
        if spec is not self.spec:
            diff = spec.first_difference(self.spec)
            if diff:
                raise SpecError(f"the {what}'s spec and the input's spec differ: {diff}")
        if channels is not None and self.channels != channels:
            raise SpecError(f"the {what} expects {channels} channels, the features have {self.channels}")

    # ------------------------------------------------------------------------------ pointwise
    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "WeightSpaceFeatures":
        """Apply a pointwise (or channel-wise) ``fn`` to every tensor."""
        return WeightSpaceFeatures(self.spec, {n: fn(t) for n, t in self.tensors.items()})

    def to(self, *args, **kwargs) -> "WeightSpaceFeatures":
        return self.map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "WeightSpaceFeatures":
        return self.map(torch.Tensor.detach)

    def cat(self, other: "WeightSpaceFeatures") -> "WeightSpaceFeatures":
        """Concatenate channels."""
        other.check(self.spec, what="features")
        return WeightSpaceFeatures(self.spec, {n: torch.cat([t, other.tensors[n]], 1) for n, t in self.tensors.items()})

    def flatten(self) -> torch.Tensor:
        """``[B, C * P]`` (entries in spec order, channels outermost within each tensor)."""
        b = self.batch_size
        return torch.cat([t.reshape(b, -1) for t in self.tensors.values()], 1)

    def _binary(self, other, op) -> "WeightSpaceFeatures":
        if isinstance(other, WeightSpaceFeatures):
            other.check(self.spec, what="features")
            return WeightSpaceFeatures(self.spec, {n: op(t, other.tensors[n]) for n, t in self.tensors.items()})
        if isinstance(other, numbers.Number) or (isinstance(other, torch.Tensor) and other.dim() == 0):
            return self.map(lambda t: op(t, other))
        if isinstance(other, torch.Tensor) and other.dim() == 1 and other.shape[0] == self.channels:
            return WeightSpaceFeatures(self.spec, {n: op(t, other.view(1, -1, *([1] * (t.dim() - 2))).to(t))
                                                   for n, t in self.tensors.items()})
        return NotImplemented

    def __add__(self, other):
        return self._binary(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other):
        return self._binary(other, torch.sub)

    def __mul__(self, other):
        return self._binary(other, torch.mul)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._binary(other, torch.div)

    def __neg__(self):
        return self.map(torch.neg)

    def __repr__(self) -> str:
        return (f"WeightSpaceFeatures({self.batch_size} networks x {self.channels} channels, "
                f"{len(self.tensors)} tensors, dtype={self.dtype})")
