"""The transform protocol, ``Compose`` / ``RandomApply``, and the per-network draw helpers.

Design decisions:

* A transform is a callable ``t(w, generator=None) -> WeightSpace`` on a whole batch ``w`` of B
  networks. Every random quantity is drawn once *per network* (``[B]`` or ``[B, ...]`` tensors) and
  applied with broadcasting, so a batch costs a handful of tensor ops whatever B is; a Dataset that
  calls it on one sample (B = 1) gets the same distribution.
* Randomness comes only from the ``generator`` argument (a ``torch.Generator``; ``None`` uses
  torch's default generator, as torchvision does). Nothing here seeds anything. Pass a CPU
  generator: group elements and per-network parameters (a few numbers per network) are drawn on the
  CPU, noise on the generator's device, and everything moves to the weights' device, so one seed
  gives the same batch whether the weights live on the CPU or an accelerator.
* Transforms read everything they need from ``w.spec``: no architecture-specific code. Parameters
  are validated when the transform is built; symmetry requirements (a sign symmetry, a first layer
  reading ``(x, y)``) are checked on the first call, when the spec is known.
* ``Compose`` and ``RandomApply`` take only transforms that return a WeightSpace. ``WeightMixup``
  returns ``(mixed, lam, partner)`` because the labels must mix too, so it is applied after them.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import torch

from ..space import WeightSpace

__all__ = ["Transform", "Compose", "RandomApply"]


# ------------------------------------------------------------------------------------ helpers


def check_weightspace(w: Any, who: str) -> WeightSpace:
    """``w`` if it is a WeightSpace, else a TypeError saying how to make one."""
    if not isinstance(w, WeightSpace):
        raise TypeError(f"{who} takes a WeightSpace batch (WeightSpace.from_state_dicts([...], spec) makes one "
                        f"from state dicts; a Dataset sample is a WeightSpace of one network), got {type(w).__name__}")
    return w


def draw_device(w: WeightSpace, generator: torch.Generator | None) -> torch.device:
    """Where random numbers are drawn: the generator's device, else the weights'."""
    return generator.device if generator is not None else w.device


def uniform(generator: torch.Generator | None, shape: Sequence[int], low: float, high: float,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """float64 draws in ``[low, high)`` of ``shape``; exactly ``low`` when ``low == high``."""
    u = torch.rand(*shape, generator=generator, dtype=torch.float64, device=device)
    return low + (high - low) * u if high != low else torch.full(tuple(shape), float(low), dtype=torch.float64,
                                                                  device=device)


def log_uniform(generator: torch.Generator | None, shape: Sequence[int], low: float, high: float,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """float64 draws with ``log`` uniform in ``[log low, log high)``; exactly ``low`` when ``low == high``."""
    u = torch.rand(*shape, generator=generator, dtype=torch.float64, device=device)
    return low * (high / low) ** u


def per_network(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values [B]`` shaped ``[B, 1, ..., 1]`` to broadcast against ``like [B, *shape]``, on its
    device and in its dtype."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def as_range(value: Any, name: str, *, symmetric: bool = False, minimum: float | None = None,
             maximum: float | None = None, open_minimum: bool = False) -> tuple[float, float]:
    """A parameter given as one number or a ``(low, high)`` pair, as ``(low, high)`` floats.

    One number ``v`` means ``(-v, v)`` when ``symmetric`` (then ``v >= 0``), else ``(v, v)``.
    ``minimum`` / ``maximum`` bound both ends (``open_minimum``: strictly above ``minimum``)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if symmetric:
            if v < 0:
                raise ValueError(f"{name} must be >= 0 (a range (-{name}, {name})) or a (low, high) pair, got {v}")
            low, high = -v, v
        else:
            low = high = v
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) for x in value):
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise ValueError(f"{name} range must have low <= high, got ({low}, {high})")
    else:
        raise TypeError(f"{name} must be a number or a (low, high) pair of numbers, got {value!r}")
    if not (torch.isfinite(torch.tensor([low, high])).all()):
        raise ValueError(f"{name} must be finite, got ({low}, {high})")
    if minimum is not None and (low < minimum or (open_minimum and low <= minimum)):
        bound = f"> {minimum}" if open_minimum else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got ({low}, {high})")
    if maximum is not None and high > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got ({low}, {high})")
    return low, high


def learned_parameters(w: WeightSpace) -> tuple[str, ...]:
    """The entries that noise-like transforms touch: floating ``nn.Parameter`` s (role
    ``"parameter"``). Norm statistics (running variances must stay positive) and plain buffers are
    carried unchanged."""
    return tuple(p.name for p in w.spec.params if p.role == "parameter" and w.tensors[p.name].is_floating_point())


def replace(w: WeightSpace, new: dict[str, torch.Tensor]) -> WeightSpace:
    """``w`` with the entries in ``new`` replaced."""
    return WeightSpace(w.spec, {n: new.get(n, t) for n, t in w.tensors.items()})


# ------------------------------------------------------------------------------------ protocol


class Transform:
    """Base class: ``t(w, generator=None) -> WeightSpace``; subclasses implement :meth:`forward`."""

    def __call__(self, w: WeightSpace, generator: torch.Generator | None = None) -> WeightSpace:
        return self.forward(check_weightspace(w, type(self).__name__), generator)

    def forward(self, w: WeightSpace, generator: torch.Generator | None) -> WeightSpace:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _check_transform(t: Any, who: str) -> Callable:
    from .mixup import WeightMixup

    if isinstance(t, WeightMixup):
        raise TypeError(f"{who}: WeightMixup returns (mixed, lam, partner) and mixes the labels too; apply it "
                        f"after the other transforms, where the labels are at hand")
    if not callable(t):
        raise TypeError(f"{who} takes callables t(w, generator=None) -> WeightSpace, got {type(t).__name__}")
    return t


def _as_result(out: Any, t: Any, who: str) -> WeightSpace:
    if not isinstance(out, WeightSpace):
        raise TypeError(f"{who}: {t!r} returned {type(out).__name__}, not a WeightSpace")
    return out


class Compose(Transform):
    """Apply ``transforms`` in order, all drawing from the same generator (as torchvision's)."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = [_check_transform(t, "Compose") for t in transforms]

    def forward(self, w, generator):
        for t in self.transforms:
            w = _as_result(t(w, generator=generator), t, "Compose")
        return w

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])" if inner else "Compose([])"


class RandomApply(Transform):
    """Apply ``transform`` to each network of the batch independently with probability ``p``.

    ``p = 0`` returns the input untouched and ``p = 1`` is exactly ``transform`` (neither draws a
    coin); otherwise one coin per network is drawn first, then ``transform`` runs once on the whole
    batch and the networks whose coin came up keep its result (vectorized: no per-network loop)."""

    def __init__(self, transform: Callable, p: float = 0.5):
        self.transform = _check_transform(transform, "RandomApply")
        self.p = as_range(p, "p", minimum=0.0, maximum=1.0)[0]

    def forward(self, w, generator):
        if self.p == 0.0:
            return w
        if self.p == 1.0:
            return _as_result(self.transform(w, generator=generator), self.transform, "RandomApply")
        coin = torch.rand(w.batch_size, generator=generator, device=draw_device(w, generator)) < self.p
        if not bool(coin.any()):
            return w
        out = _as_result(self.transform(w, generator=generator), self.transform, "RandomApply")
        coin = coin.to(w.device)
        return WeightSpace(w.spec, {n: torch.where(coin.view(-1, *([1] * (t.dim() - 1))), out.tensors[n], t)
                                    for n, t in w.tensors.items()})
