"""Augmentations that change the function a little: Gaussian noise, weight dropout, magnitude masking.

Design decisions:

* They touch the floating ``nn.Parameter`` entries only (role ``"parameter"``): BatchNorm running
  statistics are not learned weights (and a running variance must stay positive), plain buffers are
  carried along.
* Strengths are per tensor, never global over the network: layers live on very different scales
  (a SIREN's first layer is ~0.5, its hidden weights ~0.01), so one global threshold or noise level
  would wipe out or ignore whole layers. ``GaussianNoise(relative=True)`` scales the noise of each
  tensor of each network by that tensor's RMS; ``MagnitudeMasking`` zeroes the smallest fraction of
  each tensor of each network.
* Each strength is one number, or a ``(low, high)`` range drawn uniformly once per network.
* Each is vectorized over the batch: one draw of the tensor's shape; the masking finds every
  network's threshold with one partial selection (``topk``) per tensor, not a sort.
* Noise-like transforms commute with permutations (the noise is i.i.d. per entry, the masking and
  relative scale are permutation-invariant), so they compose with the symmetry transforms in any order.
"""
from __future__ import annotations

import torch

from .base import Transform, as_range, draw_device, learned_parameters, per_network, replace, uniform

__all__ = ["GaussianNoise", "WeightDropout", "MagnitudeMasking"]


def _strength(low_high: tuple[float, float], generator, w, device) -> torch.Tensor:
    """One strength per network, ``[B]`` float64, uniform in ``low_high``."""
    return uniform(generator, (w.batch_size,), *low_high, device)


class GaussianNoise(Transform):
    """Add ``N(0, sigma^2)`` to every parameter entry. ``relative=True``: ``sigma = std * RMS`` of the
    tensor in that network (``std = 0.05`` is 5% of each tensor's scale; an all-zero tensor gets no
    noise); ``relative=False``: ``sigma = std``. ``std``: a number or a ``(low, high)`` range drawn per
    network."""

    def __init__(self, std: float | tuple[float, float] = 0.05, relative: bool = True):
        self.std = as_range(std, "std", minimum=0.0)
        self.relative = bool(relative)

    def forward(self, w, generator):
        dev = draw_device(w, generator)
        sigma = _strength(self.std, generator, w, dev)                      # [B]
        out = {}
        for n in learned_parameters(w):
            t = w.tensors[n]
            noise = torch.randn(t.shape, generator=generator, dtype=t.dtype, device=dev).to(t.device)
            s = per_network(sigma, t)
            if self.relative:                                                # RMS per network and tensor
                dims = tuple(range(1, t.dim()))
                s = s * (t.detach().pow(2).mean(dim=dims, keepdim=True).sqrt() if dims else t.detach().abs())
            out[n] = t + s * noise
        return replace(w, out)


class WeightDropout(Transform):
    """Zero each parameter entry independently with probability ``p`` (DropConnect on the weights as
    data). ``rescale=True`` multiplies the kept entries by ``1 / (1 - p)`` as dropout layers do
    (off by default: the augmented network should stay close to the original). ``p``: a number in
    ``[0, 1)`` or a ``(low, high)`` range drawn per network."""

    def __init__(self, p: float | tuple[float, float] = 0.1, rescale: bool = False):
        self.p = as_range(p, "p", minimum=0.0, maximum=1.0)
        if self.p[1] >= 1.0:
            raise ValueError(f"p must be < 1 (p = 1 zeroes every weight), got {self.p}")
        self.rescale = bool(rescale)

    def forward(self, w, generator):
        dev = draw_device(w, generator)
        p = _strength(self.p, generator, w, dev)                                # [B]
        out = {}
        for n in learned_parameters(w):
            t = w.tensors[n]
            pt = per_network(p, t)
            keep = torch.rand(t.shape, generator=generator, dtype=t.dtype, device=dev).to(t.device) >= pt
            out[n] = t * keep / (1 - pt) if self.rescale else t * keep
        return replace(w, out)


class MagnitudeMasking(Transform):
    """Zero the ``floor(q * numel)`` entries of smallest magnitude of every parameter tensor of every
    network (magnitude pruning as augmentation). ``q``: a fraction in ``[0, 1]`` or a ``(low, high)``
    range drawn per network. Entries tied with the threshold magnitude are zeroed together (trained
    weights have no such ties except exact zeros, which stay zero anyway)."""

    def __init__(self, q: float | tuple[float, float] = 0.1):
        self.q = as_range(q, "q", minimum=0.0, maximum=1.0)

    def forward(self, w, generator):
        dev = draw_device(w, generator)
        q = _strength(self.q, generator, w, dev).to(w.device)                   # [B]
        out = {}
        for n in learned_parameters(w):
            t = w.tensors[n]
            flat = t.reshape(t.shape[0], -1)
            k = torch.floor(q * flat.shape[1] + 1e-9).long()                   # entries to zero, [B]
            if not bool((k > 0).any()):
                continue
            mag = flat.detach().abs()
            out[n] = (flat * (mag > _kth_smallest(mag, k).unsqueeze(1))).reshape(t.shape)
        return replace(w, out)


def _kth_smallest(mag: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row ``i`` of ``mag [B, n]``, its ``k[i]``-th smallest value (``-inf`` where ``k[i] = 0``).

    One partial selection (``topk``) for the whole batch, from whichever end is shorter: much cheaper
    than sorting every row when ``q`` is small (or close to 1)."""
    n = mag.shape[1]
    kmin, kmax = int(k.min()), int(k.max())
    if kmax <= n - kmin + 1:
        vals = mag.topk(kmax, dim=1, largest=False).values                    # ascending, [B, kmax]
        idx = (k - 1).clamp_min(0)
    else:
        vals = mag.topk(n - kmin + 1, dim=1, largest=True).values              # descending
        idx = (n - k).clamp_max(vals.shape[1] - 1)
    kth = vals.gather(1, idx.unsqueeze(1)).squeeze(1)
    return torch.where(k > 0, kth, torch.full_like(kth, -float("inf")))
