"""Moving a network's entries by a permutation, for the alignment loops (unchecked, fast).

Turning user inputs into checked state dicts lives in :mod:`weightspace.inputs`; ``as_state`` is
re-exported here only for the modules that still import it from this one."""
from __future__ import annotations

import torch

from ..inputs import as_state
from ..spec.spec import WeightSpaceSpec
from ..symmetry.plan import axis_index

__all__ = ["permute_entries", "as_state"]


def permute_entries(state: dict[str, torch.Tensor], names, spec: WeightSpaceSpec, perms: dict[str, torch.Tensor],
                    out: dict[str, torch.Tensor]) -> None:
    """``out[name] = state[name]`` permuted by ``perms`` (unchecked, fast) for each of ``names``."""
    for name in names:
        t = state[name]
        for action in spec.axis_actions(name):
            idx = axis_index(action, perms, t.device, None)
            if idx is not None:
                t = t.index_select(action.axis, idx)
        out[name] = t
