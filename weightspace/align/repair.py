"""REPAIR (Jordan et al., ICLR 2023): give the merged network's neurons the statistics of the
endpoints' neurons.

Averaging two aligned networks shrinks the variance of hidden activations ("variance collapse"),
which is much of the barrier that remains after alignment. REPAIR measures, at every correctable
pre-activation, the mean ``mu_k`` and standard deviation ``sigma_k`` of each neuron in every endpoint
``k``, and rescales the merged network's neuron so that its mean and standard deviation become the
weighted averages ``sum_k w_k mu_k`` and ``sum_k w_k sigma_k``.

What is corrected, read off the spec's dataflow (no per-architecture code):

* BatchNorm outputs: the BatchNorm affine is set to the targets (``weight = sign * sigma_target``,
  ``bias = mu_target``) and the running statistics are reset from data, so the layer's output
  takes the target statistics (the BatchNorm form of REPAIR; with interpolated affines this is
  exactly the "reset BN" of Git Re-Basin).
* Outputs of a linear / conv op with a bias, and of other affine norms (LayerNorm, GroupNorm ...):
  the per-neuron affine correction ``y -> a * y + c`` with ``a = sigma_target / sigma_merged`` and
  ``c = mu_target - a * mu_merged`` is folded into the op itself (its weight rows and bias, or
  its norm affine), so the merged network keeps its architecture and state-dict keys. Corrections
  upstream change the statistics downstream, so the merged statistics are measured again after
  each round of folding until every correction is the identity (to ``tol``): round ``r`` makes the
  ``r``-th layer of points exact, as a sequential pass would.

Not corrected: ops without a bias and without a norm after them (a shift cannot be expressed without
adding a parameter), parameters shared by several ops (tied weights; disjoint slices of one tensor,
such as a fused q/k/v projection, are fine), and network outputs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..data.batches import iter_batches
from ..spec.activations import site_activations
from ..spec.spec import WeightSpaceSpec
from .bn import batchnorm_modules, reset_bn_statistics


@dataclass(frozen=True)
class RepairPoint:
    """A site whose pre-activations REPAIR corrects, and how: ``kind`` is ``"bn"`` (set BatchNorm
    affine, reset statistics) or ``"fold"`` (fold ``a * y + c`` into ``scale`` / ``shift``).
    ``scale`` / ``shift``: ``(param, axis, start)``; neuron ``j`` of the site is entry ``start + j``."""

    site: int
    name: str
    kind: str
    scale: tuple[str, int, int]
    shift: tuple[str, int, int]
    size: int


def repair_points(spec: WeightSpaceSpec) -> list[RepairPoint]:
    """The correctable sites of a traced spec, in dataflow order."""
    df = spec.dataflow
    if df is None:
        raise ValueError("REPAIR needs a traced spec (WeightSpaceSpec.from_module): this spec has no dataflow")
    uses: dict[str, list] = {}
    for op in df.ops:
        for u in op.params:
            uses.setdefault(u.name, []).append(u.ranges)

    def shared(u) -> bool:  # another use of the parameter overlaps this one (tied weights)
        overlaps = [r for r in uses[u.name] if all(a < d and c < b for (a, b), (c, d) in zip(r, u.ranges))]
        return len(overlaps) > 1

    points = []
    for op in df.ops:
        site = df.site(op.output)
        if site.kind != "hidden" or op.kind not in ("linear", "norm"):
            continue
        w, b = op.param("weight"), op.param("bias")
        if w is None or b is None or shared(w) or shared(b):
            continue
        axis_w = next((k for k, d in enumerate(w.dims) if d in ("out", "neuron")), None)
        axis_b = next((k for k, d in enumerate(b.dims) if d in ("out", "neuron")), None)
        if axis_w is None or axis_b is None:
            continue
        if w.ranges[axis_w][1] - w.ranges[axis_w][0] != site.size:
            continue
        kind = "bn" if op.kind == "norm" and op.attr("type") == "batch" else "fold"
        points.append(RepairPoint(site.id, op.name, kind, (w.name, axis_w, w.ranges[axis_w][0]),
                                  (b.name, axis_b, b.ranges[axis_b][0]), site.size))
    return points


def _with_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    m = copy.deepcopy(model)
    m.load_state_dict(dict(state))
    return m.eval()


@torch.no_grad()
def neuron_statistics(model: torch.nn.Module, state: Mapping[str, torch.Tensor], data: Any, sites: Sequence[int],
                      spec: WeightSpaceSpec,
                      batch_size: int | None = 1024) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{site: (mean [size], std [size])}`` of the pre-activations of ``sites`` over ``data``
    (samples and positions pooled)."""
    m = _with_state(model, state)
    acc: dict[int, list] = {}
    for inputs, _ in iter_batches(data, batch_size):
        acts = site_activations(m, inputs[0] if len(inputs) == 1 else inputs, spec, pre_activation=True)
        for s in sites:
            v = acts[s].double()
            upd = [v.shape[0], v.sum(0), (v * v).sum(0)]
            acc[s] = [x + u for x, u in zip(acc[s], upd)] if s in acc else upd
    out = {}
    for s, (n, s1, s2) in acc.items():
        mean = s1 / n
        out[s] = (mean, (s2 / n - mean * mean).clamp_min(0).sqrt())
    return out


def endpoint_statistics(model: torch.nn.Module, endpoints: Sequence[Mapping[str, torch.Tensor]], data: Any, *,
                        spec: WeightSpaceSpec | None = None, batch_size: int | None = 1024) -> list[dict]:
    """Per endpoint, the statistics REPAIR needs (compute once, pass to :func:`repair` as
    ``statistics=`` when repairing many interpolations of the same endpoints)."""
    spec = spec or _spec_for(model, data)
    sites = [p.site for p in repair_points(spec)]
    return [neuron_statistics(model, e, data, sites, spec, batch_size) for e in endpoints]


def _spec_for(model: torch.nn.Module, data: Any) -> WeightSpaceSpec:
    inputs, _ = next(iter(iter_batches(data, 2)))
    return WeightSpaceSpec.from_module(model, inputs[0] if len(inputs) == 1 else inputs)


def _set(state: dict, ref: tuple[str, int, int], size: int, fn) -> None:
    name, axis, start = ref
    t = state[name].clone()
    sl = t.narrow(axis, start, size)
    shape = [1] * t.dim()
    shape[axis] = size
    sl.copy_(fn(sl, shape))
    state[name] = t


@torch.no_grad()
def repair(model: torch.nn.Module, merged: Mapping[str, torch.Tensor],
           endpoints: Sequence[Mapping[str, torch.Tensor]] | None,
           data: Any, *, weights: Sequence[float] | None = None, spec: WeightSpaceSpec | None = None,
           statistics: list[dict] | None = None, batch_size: int | None = 1024, bn_batch_size: int | None = 256,
           max_passes: int | None = None, tol: float = 1e-3, eps: float = 1e-6,
           info: dict | None = None) -> dict[str, torch.Tensor]:
    """The merged state dict with REPAIR applied (see the module docstring for what is corrected).

    ``model``: a module of the architecture (weights ignored). ``merged``: the merged state dict.
    ``endpoints``: the aligned endpoint state dicts (or None with ``statistics`` from
    :func:`endpoint_statistics`). ``weights``: the endpoints' interpolation weights (default equal;
    ``(1 - alpha, alpha)`` for a point on the path between two). ``data``: inputs to measure
    statistics on (a tensor, ``(x, y)`` or batches). ``info``: filled with ``points``, ``bn_points``,
    ``passes`` and ``residual`` (largest remaining correction).
    """
    spec = spec or _spec_for(model, data)
    points = repair_points(spec)
    if statistics is None:
        statistics = endpoint_statistics(model, endpoints, data, spec=spec, batch_size=batch_size)
    k = len(statistics)
    w = (torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None
         else torch.as_tensor(weights, dtype=torch.float64))
    if w.shape != (k,):
        raise ValueError(f"{len(w)} weights for {k} endpoints")
    target = {p.site: (sum(w[i] * statistics[i][p.site][0] for i in range(k)),
                       sum(w[i] * statistics[i][p.site][1] for i in range(k))) for p in points}
    state = {n: v.clone() for n, v in merged.items()}
    bn_points = [p for p in points if p.kind == "bn"]
    fold = [p for p in points if p.kind == "fold"]
    has_bn = bool(batchnorm_modules(model))

    for p in bn_points:
        mu, sd = target[p.site]
        _set(state, p.scale, p.size, lambda t, shape, sd=sd: torch.where(t < 0, -1.0, 1.0) * sd.to(t).view(shape))
        _set(state, p.shift, p.size, lambda t, shape, mu=mu: mu.to(t).view(shape))
    if has_bn:
        state = reset_bn_statistics(model, state, data, batch_size=bn_batch_size)
    passes, residual = 0, 0.0
    limit = max_passes if max_passes is not None else len(fold) + 1
    while fold and passes < limit:
        stats = neuron_statistics(model, state, data, [p.site for p in fold], spec, batch_size)
        passes += 1
        residual = 0.0
        for p in fold:
            m, s = stats[p.site]
            mu, sd = target[p.site]
            a = sd / (s + eps)
            c = mu - a * m
            residual = max(residual, float((a - 1).abs().max()), float((c.abs() / (sd + eps)).max()))
            _set(state, p.scale, p.size, lambda t, shape, a=a: t * a.to(t).view(shape))
            _set(state, p.shift, p.size, lambda t, shape, a=a, c=c: t * a.to(t).view(shape) + c.to(t).view(shape))
        if has_bn:
            state = reset_bn_statistics(model, state, data, batch_size=bn_batch_size)
        if residual < tol:
            break
    if info is not None:
        info.update(points=len(fold), bn_points=len(bn_points), passes=passes, residual=residual)
    return state
