"""Recompute BatchNorm running statistics of merged weights from data."""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

from ..data.batches import iter_batches


def batchnorm_modules(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reset_bn_statistics(model: nn.Module, state: Mapping[str, torch.Tensor], data: Any, *,
                        batch_size: int | None = 256) -> dict[str, torch.Tensor]:
    """``state`` with every BatchNorm's ``running_mean`` / ``running_var`` replaced by the statistics
    the network with these weights actually produces on ``data``.

    Interpolating two networks interpolates their BatchNorm statistics too, which no longer match
    the merged network's activations (variance collapse); Git Re-Basin and REPAIR reset them. The
    pass runs the BatchNorm layers in training mode with a cumulative average (``momentum=None``,
    one batch of ``batch_size`` at a time, so each layer sees its inputs normalized as in training)
    and everything else in eval mode. ``model``: a module of the architecture (left untouched).
    Networks without BatchNorm come back unchanged.
    """
    m = copy.deepcopy(model)
    m.load_state_dict(dict(state))
    bns = batchnorm_modules(m)
    if not bns:
        return {k: v.clone() for k, v in state.items()}
    m.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for inputs, _ in iter_batches(data, batch_size):
        m(*inputs)
    new = m.state_dict()
    return {k: new[k].detach().clone() for k in state}
