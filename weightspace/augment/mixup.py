"""Weight-space MixUp: mix each network with a partner from the batch, optionally after aligning it.

Anchors: Zhang et al. (ICLR 2018) for MixUp; Shamsian et al. ("Data Augmentations in Deep Weight
Spaces", 2023; "Improved Generalization of Weight Space Networks via Augmentations", ICML 2024) for
its weight-space variants. Two networks of one architecture are points of one orbit each, so the
naive average of their weights depends on the arbitrary order of their hidden neurons; aligning the
partner first (Git Re-Basin's weight matching) makes the mix meaningful.

Design decisions:

* ``align="none"`` mixes the weights as they are; ``"permute"`` first moves each partner by its own
  random permutation (a free, function-preserving change of the partner, which makes the mixes of a
  pair as diverse as the group); ``"match"`` first permutes each partner to the element of its orbit
  closest to the network (``ws.weight_matching``, one call per network: the only per-network loop of
  ``weightspace.augment``; ~10 ms per SIREN pair on a CPU core). Only ``"match"`` is an alignment:
  mixing a network with a permuted copy of itself gives back the network, for every ``lam``.
* Partners follow one random cycle through the batch (``partner = order[(rank + 1) % B]``), so no
  network is its own partner when ``B >= 2`` and every network is used as a partner exactly once.
* ``lam ~ Beta(alpha, alpha)`` per network, drawn from the generator (two Gamma draws;
  ``torch.distributions`` takes no generator). The result is ``lam * w + (1 - lam) * aligned
  partner``; labels mix the same way: ``lam * y + (1 - lam) * y[partner]`` (or the loss:
  ``lam * CE(out, y) + (1 - lam) * CE(out, y[partner])``).
* It returns ``(mixed, lam, partner)``, not a WeightSpace, so it is applied after ``Compose``.
"""
from __future__ import annotations

import torch

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..symmetry.element import GroupElement, random_element
from .base import as_range, check_weightspace, draw_device

__all__ = ["WeightMixup", "random_partners", "beta"]

ALIGNS = ("none", "permute", "match")


def beta(alpha: float, batch_size: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """``[B]`` float64 draws from ``Beta(alpha, alpha)`` (as ``G1 / (G1 + G2)``, ``G ~ Gamma(alpha)``)."""
    conc = torch.full((2, batch_size), float(alpha), dtype=torch.float64, device=device)
    g = torch._standard_gamma(conc, generator=generator)
    total = g.sum(0)
    return torch.where(total > 0, g[0] / total.clamp_min(1e-300), torch.full_like(total, 0.5))


def random_partners(batch_size: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """``[B]`` partner indices along one random cycle through the batch (no fixed point when B >= 2)."""
    order = torch.randperm(batch_size, generator=generator, device=device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


class WeightMixup:
    """``mixup(w, generator=None) -> (mixed: WeightSpace, lam: Tensor[B], partner: LongTensor[B])``.

    ``alpha > 0``: ``lam ~ Beta(alpha, alpha)`` (small alpha: mixes close to one of the two
    networks). ``align``: ``"none"``, ``"permute"`` or ``"match"`` (see the module).
    ``match_options``: keyword arguments of ``ws.weight_matching`` (``max_iter``, ``seed``, ...)."""

    def __init__(self, alpha: float = 1.0, align: str = "none", match_options: dict | None = None):
        self.alpha = as_range(alpha, "alpha", minimum=0.0, open_minimum=True)[0]
        if align not in ALIGNS:
            raise ValueError(f"align must be one of {', '.join(repr(a) for a in ALIGNS)}, got {align!r}")
        self.align = align
        self.match_options = dict(match_options or {})

    def __repr__(self) -> str:
        return f"WeightMixup(alpha={self.alpha!r}, align={self.align!r})"

    def __call__(self, w: WeightSpace, generator: torch.Generator | None = None
                 ) -> tuple[WeightSpace, torch.Tensor, torch.Tensor]:
        check_weightspace(w, "WeightMixup")
        spec, B = w.spec, w.batch_size
        if self.align != "none" and not spec.groups:
            raise SpecError(f"WeightMixup(align={self.align!r}): the spec lists no permutation group to align "
                            f"with; use align='none'")
        dev = draw_device(w, generator)
        partner = random_partners(B, generator, dev)
        lam = beta(self.alpha, B, generator, dev)
        partner, lam = partner.to(w.device), lam.to(device=w.device, dtype=w.dtype)
        other = w[partner]
        if self.align == "permute":
            g = random_element(spec, generator, batch_size=B, kinds=("permutation",))
            other = g.to(w.device).act(other)
        elif self.align == "match":
            other = self._match(w, other)
        return w * lam + other * (1 - lam), lam, partner

    def _match(self, w: WeightSpace, other: WeightSpace) -> WeightSpace:
        """Each network of ``other`` permuted to the closest point of its orbit to ``w``'s network."""
        from ..align.weight_matching import weight_matching

        a, b = w.detach(), other.detach()
        found = [weight_matching(w.spec, a[i], b[i], **self.match_options) for i in range(w.batch_size)]
        perms = {g.name: torch.stack([f[g.name] for f in found]).to(w.device) for g in w.spec.groups
                 if all(g.name in f for f in found)}
        return GroupElement.from_permutations(w.spec, perms).act(other)
