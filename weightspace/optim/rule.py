"""``LearnedUpdate``: the functional update rule shared by the optimizer and meta-training.

Design decision: the rule is a residual on Adam (a metanetwork term added to a hand-designed base
direction, the form learned-optimizer work since Metz et al. and Harrison et al. favours for
stability): for every optimized entry

    update = -exp(log_lr) * (adam_direction + exp(log_mix) * tanh(metanet(features)))     # form="add"
    update = -exp(log_lr) * adam_direction * exp(exp(log_mix) * tanh(metanet(features)))  # form="scale"

with ``log_lr`` and ``log_mix`` meta-parameters next to the metanetwork's. ``"add"`` can add
directions Adam does not take; ``"scale"`` is a learned per-entry learning rate on Adam's direction
(it moves nothing that Adam would leave in place). Before meta-training either form is Adam (plus a
small random term), so meta-training starts from a sensible optimizer; what it learns is
the correction, bounded by ``tanh`` so that a single step stays bounded whatever the features (a
step count past the horizon, say); that does not keep long runs stable (see the benchmark).

The rule is a pure function of ``(weights, grads, state)`` for a batch of B networks
(``name -> Tensor[B, *shape]``), so meta-training unrolls it with autograd and the optimizer calls
it with B = 1.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError
from ..spec.spec import WeightSpaceSpec
from .features import FeatureConfig, Tensors, accumulate, build_features, init_state
from .meta_models import build_meta_model


class LearnedUpdate(nn.Module):
    """The update rule for ``spec``: ``meta_model`` is a name (``"per-parameter"``, ``"unf"``,
    ``"unf-exact"``, ``"nfn"``, ``"gmn"``; ``options`` go to its constructor) or a ready ``nn.Module``
    mapping ``WeightSpaceFeatures[B, C]`` of ``spec`` to one channel. ``lr``: the base learning rate
    (initial ``exp(log_lr)``); ``mix``: the initial weight of the metanetwork term; ``form``:
    ``"add"`` or ``"scale"`` (module docstring)."""

    def __init__(self, spec: WeightSpaceSpec, meta_model: str | nn.Module = "unf", *,
                 features: FeatureConfig | None = None, lr: float = 1e-2, mix: float = 0.1, form: str = "scale",
                 **options):
        super().__init__()
        if form not in ("add", "scale"):
            raise UsageError(f"form must be 'add' or 'scale', got {form!r}", "LearnedUpdate")
        self.spec, self.form = spec, form
        self.features = features or FeatureConfig()
        if isinstance(meta_model, str):
            self.net = build_meta_model(meta_model, spec, self.features.channels, **options)
            self.config = {"meta_model": meta_model, "options": options, "features": self.features.to_dict(),
                           "form": form}
        elif isinstance(meta_model, nn.Module):
            if options:
                raise UsageError(f"options {sorted(options)} only apply to a meta-model given by name", "meta_model")
            self.net, self.config = meta_model, None
        else:
            raise UsageError(f"meta_model must be a name or an nn.Module, got {type(meta_model).__name__}",
                             "meta_model")
        if lr <= 0 or mix <= 0:
            raise UsageError(f"lr and mix must be positive, got lr={lr}, mix={mix}", "LearnedUpdate")
        self.log_lr = nn.Parameter(torch.tensor(math.log(lr)))
        self.log_mix = nn.Parameter(torch.tensor(math.log(mix)))

    def init_state(self, params: Tensors) -> Tensors:
        return init_state(params, self.features)

    def forward(self, weights: Tensors, grads: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        """``(updates, new_state)``: ``weights`` holds every learned-on entry ``[B, *shape]``,
        ``grads`` the optimized ones; ``updates`` has the keys of ``grads``."""
        cfg = self.features
        state = accumulate(state, grads, cfg)
        feats = build_features(self.spec, weights, grads, state, cfg)
        out = self.net(feats)
        lr, mix = self.log_lr.exp(), self.log_mix.exp()
        updates = {}
        for name, g in grads.items():
            base = feats.tensors[name][:, cfg.base_channel]
            o = torch.tanh(out.tensors[name][:, 0])
            u = -lr * (base + mix * o) if self.form == "add" else -lr * base * torch.exp(mix * o)
            updates[name] = u.to(g.dtype)
            state[f"{name}/u"] = updates[name]
        return updates, state

    def for_spec(self, spec: WeightSpaceSpec) -> "LearnedUpdate":
        """This rule (a copy of its meta-parameters) rebuilt for ``spec``: another width of the same
        architecture."""
        if spec is self.spec:
            return self
        if self.config is None:
            raise UsageError("a rule built from a ready nn.Module cannot be rebuilt for another spec", "for_spec")
        rule = LearnedUpdate(spec, self.config["meta_model"], features=self.features, form=self.form,
                             **self.config["options"])
        _load(rule, {k: v.detach().clone() for k, v in self.state_dict().items()}, "this rule")
        return rule.to(self.log_lr)

    # ------------------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the meta-parameters and the config that rebuilds them (``.safetensors``)."""
        from ..io import save_checkpoint

        if self.config is None:
            raise UsageError("a rule built from a ready nn.Module cannot be rebuilt from a file; build it from a "
                             "meta-model name to save it", "LearnedUpdate.save")
        return save_checkpoint(self.state_dict(), Path(path), metadata={"config": json.dumps(self.config)})

    @classmethod
    def load(cls, path: str | Path, spec: WeightSpaceSpec) -> "LearnedUpdate":
        """Rebuild a saved rule for ``spec`` (any width of the architecture it was trained on)."""
        from safetensors import safe_open

        from ..io import load_checkpoint

        path = Path(path)
        tensors = load_checkpoint(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise UsageError(f"{path} has no learned-optimizer config; write it with LearnedUpdate.save", str(path))
        cfg = json.loads(meta["config"])
        rule = cls(spec, cfg["meta_model"], features=FeatureConfig.from_dict(cfg["features"]),
                   form=cfg.get("form", "add"), **cfg["options"])
        _load(rule, tensors, str(path))
        return rule


def _load(rule: LearnedUpdate, tensors: dict, source: str) -> None:
    """Load meta-parameters, or say clearly that they belong to another architecture."""
    try:
        missing, unexpected = rule.load_state_dict(tensors, strict=False)
    except RuntimeError as e:                  # coefficient shapes differ
        raise UsageError(f"{source} does not fit this network's meta-model (trained for another architecture): "
                         f"{str(e).splitlines()[-1].strip()}", source) from e
    if missing or unexpected:
        raise UsageError(f"{source} does not fit this network's meta-model (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); it was trained for another architecture", source)
