"""``LearnedOptimizer``: a ``torch.optim.Optimizer`` whose update is a metanetwork's output.

Design decision: the optimizer is a thin front over :class:`~weightspace.optim.rule.LearnedUpdate`
(the functional rule that meta-training unrolls): ``step()`` gathers the module's weights and
gradients by spec name as a batch of one network, calls the rule once for all parameters, and
writes the updates back. Its per-parameter state (momenta, second moment, previous update, step) is
ordinary ``Optimizer.state``, so ``state_dict`` / ``load_state_dict`` behave as torch users expect;
the meta-parameters travel in the same dict under ``"meta_model"``. Norm statistics (BatchNorm
running stats) are read as features but never optimized; a parameter without a gradient is left
alone that step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import UsageError
from ..spec.spec import WeightSpaceSpec
from .rule import LearnedUpdate



class LearnedOptimizer(torch.optim.Optimizer):
    """Optimize ``module`` (traced as ``spec``) with a learned update rule.

    ``meta_model``: a name (``"per-parameter"``, ``"nfn"``, ``"unf"``, ``"gmn"``), a ready
    ``nn.Module`` (features of ``spec`` -> one channel) or a :class:`LearnedUpdate`; ``options`` go
    to :class:`LearnedUpdate` (``lr``, ``mix``, ``features``, the meta-model's own options)."""

    def __init__(self, module: nn.Module, spec: WeightSpaceSpec, meta_model: str | nn.Module = "unf", **options):
        if not isinstance(module, nn.Module):
            raise UsageError(f"LearnedOptimizer optimizes an nn.Module, got {type(module).__name__}", "module")
        if not isinstance(spec, WeightSpaceSpec):
            raise UsageError(f"spec must be a WeightSpaceSpec (WeightSpaceSpec.from_module(module, example_input)), "
                             f"got {type(spec).__name__}", "spec")
        named = dict(module.named_parameters())
        entries = dict(module.state_dict(keep_vars=True))
        missing = [n for n in spec.weight_names if n not in entries]
        if missing:
            raise UsageError(f"the module has no entry '{missing[0]}' of the spec; trace the spec from this module",
                             "spec")
        stray = [n for n in named if n not in spec.weight_names]
        if stray:
            raise UsageError(f"parameter '{stray[0]}' of the module is not in the spec; trace the spec from this "
                             f"module", "spec")
        self.module, self.spec = module, spec
        self.names = [n for n in spec.weight_names if n in named]
        self.statistics = [n for n in spec.weight_names if n not in named]
        if isinstance(meta_model, LearnedUpdate):
            if options:
                raise UsageError(f"options {sorted(options)} do not apply to a ready LearnedUpdate", "meta_model")
            rule = meta_model
        else:
            rule = LearnedUpdate(spec, meta_model, **options)
        ref = named[self.names[0]] if self.names else None
        if ref is not None:
            rule = rule.to(device=ref.device, dtype=ref.dtype)
        self.rule = rule
        super().__init__([named[n] for n in self.names], {})

    @classmethod
    def from_pretrained(cls, path: str | Path, module: nn.Module, spec: WeightSpaceSpec) -> "LearnedOptimizer":
        """The optimizer with a meta-model saved by :meth:`LearnedUpdate.save` / ``meta_train``."""
        return cls(module, spec, LearnedUpdate.load(path, spec))

    def _param(self, name: str) -> nn.Parameter:
        return self.param_groups[0]["params"][self.names.index(name)]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = self.module.state_dict(keep_vars=True)
        weights = {n: entries[n].detach().unsqueeze(0) for n in self.spec.weight_names}
        params = {n: self._param(n) for n in self.names}
        live = [n for n in self.names if params[n].grad is not None]
        if not live:
            return loss
        grads = {n: params[n].grad.detach().unsqueeze(0) for n in live}
        state: dict[str, torch.Tensor] = {}
        for n in live:
            st = self.state[params[n]]
            if not st:
                fresh = self.rule.init_state({n: weights[n]})
                st.update({k.split("/")[-1]: v[0] for k, v in fresh.items() if k != "step"})
                st["step"] = fresh["step"]
            for k, v in st.items():
                if k != "step":
                    state[f"{n}/{k}"] = v.unsqueeze(0)
        state["step"] = max((self.state[params[n]]["step"] for n in live), key=float)
        updates, state = self.rule(weights, grads, state)
        for n in live:
            p, st = params[n], self.state[params[n]]
            p.add_(updates[n][0])
            for k in list(st):
                st[k] = state["step"].clone() if k == "step" else state[f"{n}/{k}"][0]
        return loss

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["meta_model"] = {k: v.detach().clone() for k, v in self.rule.state_dict().items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        meta = state_dict.pop("meta_model", None)
        if meta is not None:
            self.rule.load_state_dict(meta)
        super().load_state_dict(state_dict)
