"""``WeightSpace``: a batch of networks' parameters that share one spec."""
from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from .spec.errors import SpecError
from .spec.spec import WeightSpaceSpec


class WeightSpace:
    """``name -> Tensor[B, *shape]`` for B networks of one architecture.

    Arithmetic (``+ - * /``, with scalars, ``[B]`` tensors or another WeightSpace of the same spec)
    acts on the learned-on entries (parameters and norm statistics); plain buffers
    (``num_batches_tracked``) are carried from the left operand. ``ws["fc1.weight"]`` is a tensor,
    ``ws[3]`` / ``ws[2:5]`` / ``ws[index_tensor]`` select networks.
    """

    __slots__ = ("spec", "tensors")

    def __init__(self, spec: WeightSpaceSpec, tensors: Mapping[str, torch.Tensor]):
        batch = None
        for p in spec.params:
            if p.name not in tensors:
                raise SpecError(f"weight space is missing '{p.name}'")
            t = tensors[p.name]
            if tuple(t.shape[1:]) != p.shape:
                raise SpecError(f"'{p.name}' has shape {tuple(t.shape)}, expected [B, *{p.shape}]")
            if batch is None:
                batch = t.shape[0]
            elif t.shape[0] != batch:
                raise SpecError(f"'{p.name}' holds {t.shape[0]} networks, earlier entries hold {batch}")
        extra = [k for k in tensors if k not in spec]
        if extra:
            raise SpecError(f"weight space has entry '{extra[0]}' that the spec does not know")
        self.spec = spec
        self.tensors = {p.name: tensors[p.name] for p in spec.params}

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_state_dicts(cls, state_dicts: Sequence[Mapping[str, torch.Tensor]],
                         spec: WeightSpaceSpec) -> "WeightSpace":
        if len(state_dicts) == 0:
            raise SpecError("no state dicts given")
        for i, sd in enumerate(state_dicts):
            spec.check_state_dict(sd, what=f"state dict #{i}")
        return cls(spec, {p.name: torch.stack([torch.as_tensor(sd[p.name]) for sd in state_dicts])
                          for p in spec.params})

    @classmethod
    def from_modules(cls, modules: Sequence[torch.nn.Module], spec: WeightSpaceSpec) -> "WeightSpace":
        return cls.from_state_dicts([{k: v.detach() for k, v in m.state_dict().items()} for m in modules], spec)

    @classmethod
    def unflatten(cls, flat: torch.Tensor, spec: WeightSpaceSpec,
                  buffers: "WeightSpace | None" = None) -> "WeightSpace":
        """Inverse of :meth:`flatten`: ``[B, P]`` back to tensors. Plain buffers come from ``buffers``
        (or zeros)."""
        if flat.dim() != 2 or flat.shape[1] != spec.num_weights:
            raise SpecError(f"flat weights have shape {tuple(flat.shape)}, the spec needs [B, {spec.num_weights}]")
        out, off = {}, 0
        b = flat.shape[0]
        for p in spec.params:
            if p.in_weight_space:
                out[p.name] = flat[:, off:off + p.numel].reshape(b, *p.shape)
                off += p.numel
            elif buffers is not None:
                out[p.name] = buffers.tensors[p.name]
            else:
                out[p.name] = torch.zeros(b, *p.shape, dtype=getattr(torch, p.dtype, torch.float32), device=flat.device)
        return cls(spec, out)

    # ------------------------------------------------------------------------------ views
    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 0

    def __len__(self) -> int:
        return self.batch_size

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors[self.spec.weight_names[0]].dtype if self.spec.weight_names else torch.float32

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return self.tensors[key]
            except KeyError:
                raise SpecError(f"weight space has no entry '{key}'") from None
        if isinstance(key, int):
            key = slice(key, key + 1) if key != -1 else slice(-1, None)
        return WeightSpace(self.spec, {n: t[key] for n, t in self.tensors.items()})

    def __iter__(self) -> Iterator["WeightSpace"]:
        for i in range(self.batch_size):
            yield self[i]

    def items(self):
        return self.tensors.items()

    def to_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        return [{n: t[i].clone() for n, t in self.tensors.items()} for i in range(self.batch_size)]

    def state_dict(self, i: int = 0) -> dict[str, torch.Tensor]:
        return {n: t[i].clone() for n, t in self.tensors.items()}

    def flatten(self) -> torch.Tensor:
        """``[B, P]``: parameters and statistics in spec order (see ``spec.weight_names``)."""
        b = self.batch_size
        return torch.cat([self.tensors[n].reshape(b, -1) for n in self.spec.weight_names], dim=1)

    # ------------------------------------------------------------------------------ transforms
    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], buffers: bool = False) -> "WeightSpace":
        """Apply ``fn`` to every learned-on tensor (and plain buffers too when ``buffers``)."""
        keep = set(self.spec.weight_names)
        return WeightSpace(self.spec, {n: fn(t) if (n in keep or buffers) else t for n, t in self.tensors.items()})

    def to(self, *args, **kwargs) -> "WeightSpace":
        """Like ``Tensor.to``; a dtype applies to floating-point entries only."""
        def move(t):
            if not t.is_floating_point():
                kw = {k: v for k, v in kwargs.items() if k != "dtype"}
                a = [x for x in args if not isinstance(x, torch.dtype)]
                return t.to(*a, **kw) if (a or kw) else t
            return t.to(*args, **kwargs)
        return WeightSpace(self.spec, {n: move(t) for n, t in self.tensors.items()})

    def detach(self) -> "WeightSpace":
        return WeightSpace(self.spec, {n: t.detach() for n, t in self.tensors.items()})

    def clone(self) -> "WeightSpace":
        return WeightSpace(self.spec, {n: t.clone() for n, t in self.tensors.items()})

    @staticmethod
    def cat(spaces: Iterable["WeightSpace"]) -> "WeightSpace":
        spaces = list(spaces)
        if not spaces:
            raise SpecError("nothing to concatenate")
        spec = spaces[0].spec
        for s in spaces[1:]:
            spec.require_same(s.spec)
        return WeightSpace(spec, {n: torch.cat([s.tensors[n] for s in spaces]) for n in spec.names})

    # ------------------------------------------------------------------------------ arithmetic
    def _binary(self, other: Any, op: Callable) -> "WeightSpace":
        keep = set(self.spec.weight_names)
        if isinstance(other, WeightSpace):
            self.spec.require_same(other.spec)
            return WeightSpace(self.spec, {n: op(t, other.tensors[n]) if n in keep else t
                                           for n, t in self.tensors.items()})
        if isinstance(other, numbers.Number):
            return WeightSpace(self.spec, {n: op(t, other) if n in keep else t for n, t in self.tensors.items()})
        if isinstance(other, torch.Tensor):
            if other.dim() == 0:
                return self._binary(other.item(), op) if other.numel() == 1 else NotImplemented
            if other.dim() == 1 and other.shape[0] == self.batch_size:
                def per_net(t):
                    return op(t, other.view(-1, *([1] * (t.dim() - 1))).to(t))
                return WeightSpace(self.spec, {n: per_net(t) if n in keep else t for n, t in self.tensors.items()})
            raise SpecError(f"cannot combine a weight space of {self.batch_size} networks with a tensor of "
                            f"shape {tuple(other.shape)} (use a scalar or a [B] tensor)")
        return NotImplemented

    def __add__(self, other):
        return self._binary(other, torch.add)

    def __radd__(self, other):
        if isinstance(other, numbers.Number) and other == 0:
            return self  # sum([...]) starts from 0
        return self._binary(other, lambda a, b: b + a)

    def __sub__(self, other):
        return self._binary(other, torch.sub)

    def __rsub__(self, other):
        return self._binary(other, lambda a, b: b - a)

    def __mul__(self, other):
        return self._binary(other, torch.mul)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._binary(other, torch.div)

    def __neg__(self):
        return self.map(torch.neg)

    def __repr__(self) -> str:
        return (f"WeightSpace({self.batch_size} networks x {self.spec.num_weights:,} weights, "
                f"{len(self.spec.params)} tensors, dtype={self.dtype})")
