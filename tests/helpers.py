"""Shared test helpers: float64 models, output comparison, single-group elements."""
from __future__ import annotations

import torch

import weightspace as ws


def double_inputs(inputs: tuple) -> tuple:
    return tuple(t.double() if torch.is_tensor(t) and t.is_floating_point() else t for t in inputs)


def outputs(model: torch.nn.Module, inputs: tuple, state: dict | None = None) -> torch.Tensor:
    """Model output on ``inputs`` with ``state`` loaded (restoring the original weights after)."""
    original = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        if state is not None:
            model.load_state_dict(state)
        with torch.no_grad():
            y = model(*inputs)
    finally:
        model.load_state_dict(original)
    return y[0] if isinstance(y, tuple) else y


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()


def changed(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def non_identity(size: int, g: torch.Generator) -> torch.Tensor:
    """A random permutation that moves at least one element (size >= 2)."""
    p = torch.randperm(size, generator=g)
    if torch.equal(p, torch.arange(size)):
        p = torch.roll(p, 1)
    return p


def single_group_element(spec: ws.WeightSpaceSpec, name: str, g: torch.Generator) -> dict:
    """Move only group ``name`` (and, for a head parent, its children by whole blocks)."""
    grp = spec.group(name)
    perms = {}
    if grp.heads is None:
        perms[name] = non_identity(grp.size, g)
    else:  # within heads only; the parent stays in place
        parent, block = grp.heads
        blocks = grp.size // block
        tau = torch.stack([non_identity(block, g) for _ in range(blocks)])
        perms[name] = (torch.arange(blocks).unsqueeze(-1) * block + tau).flatten()
    for child in spec.groups:  # children move whole heads with their parent
        if child.heads is not None and child.heads[0] in perms and child.name not in perms:
            parent, block = child.heads
            sigma = perms[parent]
            perms[child.name] = (sigma.unsqueeze(-1) * block + torch.arange(block)).flatten()
    # grandchildren of a moved parent, recursively
    changed_any = True
    while changed_any:
        changed_any = False
        for child in spec.groups:
            if child.heads is not None and child.heads[0] in perms and child.name not in perms:
                parent, block = child.heads
                perms[child.name] = (perms[parent].unsqueeze(-1) * block + torch.arange(block)).flatten()
                changed_any = True
    return perms
