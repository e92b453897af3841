"""Activation matching (Git Re-Basin): pair up neurons whose activations on data correlate best."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.batches import iter_batches
from ..inputs import as_module
from ..spec.activations import site_activations
from ..spec.blocks import layout_action
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from ._tree import group_forest, solve_tree
from .weight_matching import weight_matching

Perms = dict[str, torch.Tensor]


class SiteStatistics:
    """Running first and second moments of two networks' activations at the same sites, per group
    segment: for each ``(site, offset, group, size, inner)`` the sums of ``a``, ``b``, ``a^2``,
    ``b^2`` over observations and the cross sums ``a^T b`` ``[size, size]`` (an element owning
    ``inner`` neurons contributes ``inner`` observations per sample)."""

    def __init__(self, spec: WeightSpaceSpec, kinds: tuple[str, ...] = ("hidden",)):
        if spec.dataflow is None:
            raise SpecError("activation statistics need a traced spec (WeightSpaceSpec.from_module): "
                            "this spec has no dataflow")
        self.segments = []
        for site in spec.dataflow.sites:
            if site.kind not in kinds:
                continue
            for group, size, inner, off in layout_action(site.layout).segments:
                if group is not None:
                    self.segments.append((site.id, off, group, size, inner))
        self.sums: dict[tuple, list] = {}

    @staticmethod
    def _rows(v: torch.Tensor, off: int, size: int, inner: int) -> torch.Tensor:
        v = v[:, off:off + size * inner].double()
        return v.reshape(-1, size, inner).transpose(1, 2).reshape(-1, size)   # [N * inner, size]

    def update(self, acts_a: dict[int, torch.Tensor], acts_b: dict[int, torch.Tensor]) -> None:
        for seg in self.segments:
            site, off, _, size, inner = seg
            if site not in acts_a or site not in acts_b:
                continue
            za, zb = self._rows(acts_a[site], off, size, inner), self._rows(acts_b[site], off, size, inner)
            upd = [za.shape[0], za.sum(0), zb.sum(0), (za * za).sum(0), (zb * zb).sum(0), za.T @ zb]
            if seg in self.sums:
                self.sums[seg] = [x + u for x, u in zip(self.sums[seg], upd)]
            else:
                self.sums[seg] = upd

    def similarity(self, statistic: str = "correlation", eps: float = 1e-8) -> dict[str, np.ndarray]:
        """Per group, the sum over its site segments of the ``[size, size]`` similarity: Pearson
        ``correlation`` (default), ``covariance``, or the raw mean ``inner`` product."""
        out: dict[str, np.ndarray] = {}
        for (site, off, group, size, inner), (n, sa, sb, saa, sbb, sab) in self.sums.items():
            if statistic == "inner":
                m = sab / n
            else:
                ma, mb = sa / n, sb / n
                cov = sab / n - torch.outer(ma, mb)
                if statistic == "covariance":
                    m = cov
                elif statistic == "correlation":
                    sda = (saa / n - ma * ma).clamp_min(0).sqrt()
                    sdb = (sbb / n - mb * mb).clamp_min(0).sqrt()
                    m = cov / (torch.outer(sda, sdb) + eps)
                else:
                    raise ValueError(f"unknown statistic '{statistic}' (correlation, covariance, inner)")
            m = m.cpu().numpy()
            out[group] = out[group] + m if group in out else m
        return out


def activation_matching(spec: WeightSpaceSpec, model_a: Any, model_b: Any, data: Any, *,
                        model: torch.nn.Module | None = None, batch_size: int | None = 1024,
                        statistic: str = "correlation", progress: bool = False, seed: int = 0) -> Perms:
    """Permutations ``{group: LongTensor[size]}`` aligning B to A by the activations of every hidden
    dataflow site on ``data``.

    For each group, ``M[i, j]`` sums over the sites carrying the group the correlation between A's
    neuron ``i`` and B's neuron ``j`` (post-activation values from :func:`site_activations`, over
    all samples and positions); one exact assignment per group tree (heads included, see
    ``_tree``) maximizes the total. Groups that no recorded site carries (rare) are then aligned by
    weight matching with the others held fixed.

    ``model_a`` / ``model_b``: modules, or state dicts together with ``model=`` (a module of the
    architecture). ``data``: input tensor, ``(inputs, targets)`` or an iterable of batches (targets
    unused). ``statistic``: ``correlation`` (default), ``covariance`` or ``inner`` (the raw mean
    product, Ainsworth et al.'s objective).
    """
    ma = as_module(model_a, model, "model_a")
    mb = as_module(model_b, model, "model_b")
    spec.check_state_dict(ma.state_dict(), what="model_a")
    spec.check_state_dict(mb.state_dict(), what="model_b")
    stats = SiteStatistics(spec)
    for inputs, _ in tqdm(iter_batches(data, batch_size), desc="activation statistics", disable=not progress,
                          leave=False):
        args = inputs[0] if len(inputs) == 1 else inputs
        stats.update(site_activations(ma, args, spec), site_activations(mb, args, spec))
    costs = stats.similarity(statistic)
    forest = group_forest(spec)
    perms: Perms = {g.name: torch.arange(g.size) for g in spec.groups}
    missing = []
    for root in forest.roots:
        members = forest.members(root)
        if any(g in costs for g in members):
            new, _ = solve_tree(forest, root, costs)
            perms.update(new)
        elif any(spec.params_of_group(g) for g in members):
            missing.extend(members)
    if missing:
        perms = weight_matching(spec, ma.state_dict(), mb.state_dict(), init=perms, groups=missing, seed=seed)
    return perms
