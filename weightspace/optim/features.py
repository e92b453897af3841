"""Per-entry optimizer features: the channels a learned optimizer's metanetwork reads.

Design decision: everything here is *pointwise* in the weight entries, or pooled over a whole tensor
(an RMS), so every feature commutes with every permutation of the weight space; the metanetwork
alone decides how entries talk to each other. Features are computed for a batch of B networks at
once (``name -> Tensor[B, *shape]``) and stacked as channels of ``WeightSpaceFeatures``
``[B, C, *shape]``, in this order (``C = FeatureConfig.channels``):

0. the weight itself;
1. the gradient divided by its RMS over the tensor;
2. ``g / sqrt(v)``: the RMSprop direction (``v`` the bias-corrected EMA of ``g^2``, decay 0.999);
3. ``m_d / sqrt(v)`` for every momentum decay ``d`` (Adam's direction at several time scales);
4. the previous update divided by its RMS over the tensor (an update encoding);
5. ``tanh(step / s)`` for every time scale ``s`` (a step-count encoding, the same for every entry).

Norm statistics (BatchNorm running stats) are learned-on entries of the spec but not optimized: they
get their value in channel 0 and zeros elsewhere, and their outputs are ignored. The state (momenta,
second moment, previous update) is a plain dict of tensors, so it is functional (meta-training
differentiates through it) and it saves with ``state_dict``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..nn.features import WeightSpaceFeatures
from ..spec.spec import WeightSpaceSpec

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FeatureConfig:
    """Which features to compute: momentum ``decays``, second-moment decay ``beta2``, step-count
    ``time_scales`` and the ``eps`` of every normalization."""

    decays: tuple[float, ...] = (0.5, 0.9, 0.99)
    beta2: float = 0.999
    time_scales: tuple[float, ...] = (10.0, 30.0, 100.0)
    eps: float = 1e-8

    @property
    def channels(self) -> int:
        return 4 + len(self.decays) + len(self.time_scales)

    @property
    def base_channel(self) -> int:
        """The channel holding Adam's direction with the decay closest to 0.9 (the base update)."""
        best = min(range(len(self.decays)), key=lambda i: abs(self.decays[i] - 0.9))
        return 3 + best

    def to_dict(self) -> dict:
        return {"decays": list(self.decays), "beta2": self.beta2, "time_scales": list(self.time_scales),
                "eps": self.eps}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        return cls(tuple(d["decays"]), float(d["beta2"]), tuple(d["time_scales"]), float(d["eps"]))


def _rms(t: torch.Tensor, eps: float) -> torch.Tensor:
    """``[B, *shape] -> [B, 1, ..., 1]``: the RMS over each network's tensor (a permutation invariant)."""
    dims = tuple(range(1, t.dim()))
    return (t.pow(2).mean(dims, keepdim=True) + eps).sqrt() if dims else (t.pow(2) + eps).sqrt()


def init_state(params: Tensors, config: FeatureConfig) -> Tensors:
    """Zero momenta (``m{i}``), second moment (``v``) and previous update (``u``) of every optimized
    entry, keyed ``'<name>/m0'`` etc., plus ``'step'`` (a float scalar: steps taken)."""
    state: Tensors = {}
    for name, p in params.items():
        for i in range(len(config.decays)):
            state[f"{name}/m{i}"] = torch.zeros_like(p)
        state[f"{name}/v"] = torch.zeros_like(p)
        state[f"{name}/u"] = torch.zeros_like(p)
    ref = next(iter(params.values()))
    state["step"] = torch.zeros((), dtype=ref.dtype, device=ref.device)
    return state


def accumulate(state: Tensors, grads: Tensors, config: FeatureConfig) -> Tensors:
    """The state after seeing ``grads`` (momenta and second moment updated, step + 1); ``u`` unchanged."""
    out = dict(state)
    for name, g in grads.items():
        for i, d in enumerate(config.decays):
            out[f"{name}/m{i}"] = d * state[f"{name}/m{i}"] + (1 - d) * g
        out[f"{name}/v"] = config.beta2 * state[f"{name}/v"] + (1 - config.beta2) * g * g
    out["step"] = state["step"] + 1
    return out


def build_features(spec: WeightSpaceSpec, weights: Tensors, grads: Tensors, state: Tensors,
                   config: FeatureConfig) -> WeightSpaceFeatures:
    """Stack the features of :mod:`this module <weightspace.optim.features>` as ``[B, C, *shape]``.

    ``weights``: every learned-on entry of ``spec`` (``[B, *shape]``); ``grads`` and the
    (already :func:`accumulate`-d) ``state`` cover the optimized ones."""
    step = state["step"]
    bc2 = 1 - config.beta2 ** step
    times = [torch.tanh(step / s) for s in config.time_scales]
    out = {}
    for name in spec.weight_names:
        w = weights[name]
        if name not in grads:                      # a norm statistic: its value, and nothing moves it
            zeros = torch.zeros_like(w).unsqueeze(1).expand(-1, config.channels - 1, *w.shape[1:])
            out[name] = torch.cat([w.unsqueeze(1), zeros], 1)
            continue
        g = grads[name]
        denom = (state[f"{name}/v"] / bc2).sqrt() + config.eps
        chans = [w, g / _rms(g, config.eps), g / denom]
        for i, d in enumerate(config.decays):
            chans.append(state[f"{name}/m{i}"] / (1 - d ** step) / denom)
        u = state[f"{name}/u"]
        chans.append(u / _rms(u, config.eps))
        chans += [t.expand_as(w) for t in times]
        out[name] = torch.stack(chans, 1)
    return WeightSpaceFeatures(spec, out)
