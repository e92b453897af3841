"""``WeightSpace``: a batch of networks' parameters that share one spec."""
from __future__ import annotations

import numbers
import operator
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from .spec.errors import SpecError, require_module
from .spec.spec import WeightSpaceSpec


class WeightSpace:
    """``name -> Tensor[B, *shape]`` for B networks of one architecture.

    Arithmetic (``+ - * /``, with scalars, ``[B]`` tensors or another WeightSpace of the same spec
    and batch size, or of one network, which is broadcast) acts on the learned-on entries
    (parameters and norm statistics); plain buffers (``num_batches_tracked``) are carried from the
    left operand. ``ws["fc1.weight"]`` is a tensor, ``ws[3]`` / ``ws[2:5]`` / ``ws[index_tensor]``
    select networks; an index out of range is an ``IndexError``, as for a list.
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
        for i, m in enumerate(modules):
            require_module(m, f"WeightSpace.from_modules (module #{i})")
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
        key = _network_index(key, self.batch_size)
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
            a, b = self.batch_size, other.batch_size
            if a != b and 1 not in (a, b):
                raise SpecError(f"cannot combine weight spaces of {a} and {b} networks: the batch sizes must "
                                f"match (or one side hold a single network, which is broadcast)")
            n_out = b if a == 1 else a  # torch's broadcasting: 1 against 0 gives 0
            return WeightSpace(self.spec, {n: op(t, other.tensors[n]) if n in keep else t.expand(n_out, *t.shape[1:])
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


def _network_index(key: Any, n: int) -> Any:
    """``ws[key]`` for a batch of ``n`` networks, as a tensor index: an integer (Python, numpy or a
    0-d tensor; negative counts from the end) becomes a one-network slice and must lie in
    ``-n..n-1``, like a list index; a slice is taken as given (it clips, like a list slice); an
    index tensor or list (integers, or a boolean mask of length ``n``) is checked the same way.
    Out of range is an ``IndexError`` naming the index and the batch size, never an empty batch."""
    if isinstance(key, slice):
        return key
    if not isinstance(key, bool):
        try:
            i = operator.index(key)
        except TypeError:
            i = None
        if i is not None:
            if not -n <= i < n:
                raise IndexError(f"network index {i} is out of range for a weight space of {n} networks")
            i %= n
            return slice(i, i + 1)
    idx = torch.as_tensor(key)
    if idx.dim() == 1 and idx.numel() == 0:
        return idx.long()  # ws[[]]: no networks
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise IndexError(f"a boolean mask selecting networks needs shape ({n},), got {tuple(idx.shape)}")
        return idx
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dim() != 1:
        raise IndexError(f"networks are selected by an int, a slice, or a 1-d index or mask tensor, got "
                         f"{type(key).__name__} {tuple(idx.shape) if idx.dim() else ''}".rstrip())
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.numel():
        raise IndexError(f"network index {int(bad[0])} is out of range for a weight space of {n} networks")
    return idx
