"""Everything a trace accumulates: sites, parameter axes, ops and scaling actions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..types import OpKind
from . import structure as S
from .labels import ATensor, Feat, Space


@dataclass
class RawParamUse:
    role: str
    name: str
    dims: tuple[str, ...]
    ranges: tuple[tuple[int, int], ...]


@dataclass
class RawOp:
    kind: OpKind
    name: str
    inputs: list[Feat]
    output: Space
    params: list[RawParamUse] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawScale:
    """Entries ``start:start+length`` of ``param`` axis ``axis`` are scaled by the diagonal variable
    of the site stretch ``site`` (with its flattening), to the power ``exponent``."""

    param: str
    axis: int
    start: int
    length: int
    site: Feat
    exponent: int
    use: int = 0  # the rule invocation that recorded it

class TraceState:
    def __init__(self, module: torch.nn.Module):
        self.module = module
        sd = module.state_dict(keep_vars=True)
        self.state_names: list[str] = list(sd)
        params = {id(p) for p in module.parameters()}
        canonical: dict[int, str] = {}
        self.alias: dict[str, str] = {}
        self.role: dict[str, str] = {}
        norm_stats = _norm_statistics(module)
        for name, t in sd.items():
            key = id(t)
            self.alias[name] = canonical.setdefault(key, name)
            if key in params:
                self.role[name] = "parameter"
            elif name in norm_stats or (t.is_floating_point() and name.rsplit(".", 1)[-1].startswith("running_")):
                self.role[name] = "statistic"
            else:
                self.role[name] = "buffer"
        self.tensors = {name: t for name, t in sd.items()}
        self.sites: list[Space] = []
        self.param_spaces: dict[tuple[str, int], Space] = {}
        self.input_sites: dict[Any, Space] = {}
        self.ops: list[RawOp] = []
        self.scales: list[RawScale] = []
        self.unaccounted_params: set[str] = set()
        # per parameter: (use id, ranges) of every op that used it with scaling actions
        self.param_uses: dict[str, list[tuple[int, tuple[tuple[int, int], ...]]]] = {}
        self._names: set[str] = set()
        self.on_value = None  # a callback seeing every traced tensor (site_activations)
        # (node, op, module path) of every op drawing random numbers in forward (rules/creation.py)
        self.random_draws: list[tuple[str, str, str | None]] = []
        # elementwise provenance (composite.py): site -> (root site, root values); named composites
        self.roots: dict[int, tuple[Space, torch.Tensor]] = {}
        self.composites: list[tuple[Space, int, int, str]] = []
        # (group variable, sentence) for every symmetry an op removed on purpose, for spec.notes
        self.pins: list[tuple[S.Var, str]] = []

    # --------------------------------------------------------------------------------- names
    def unique(self, name: str) -> str:
        base, k = name or "site", 1
        while name in self._names or not name:
            k += 1
            name = f"{base}#{k}"
        self._names.add(name)
        return name

    # --------------------------------------------------------------------------------- spaces
    def new_site(self, size: int, name: str, *, kind: str = "hidden", var: S.Var | None = None,
                 diag: S.Var | None = None) -> Space:
        name = self.unique(name)
        var = var if var is not None else S.leaf(size, name)
        diag = diag if diag is not None else S.leaf(size, name, kinds=S.ALL_KINDS)
        site = Space(size, var, kind=kind, name=name, diag=diag, site_id=len(self.sites))
        self.sites.append(site)
        return site

    def input_site(self, key: Any, size: int, name: str, kind: str = "input") -> Space:
        if key not in self.input_sites:
            self.input_sites[key] = self.new_site(size, name, kind=kind, var=S.fixed(size),
                                                   diag=S.fixed(size))
        return self.input_sites[key]

    def param_space(self, name: str, axis: int) -> Space:
        name = self.alias.get(name, name)
        key = (name, axis)
        if key not in self.param_spaces:
            size = self.tensors[name].shape[axis]
            var = S.leaf(size, f"{name}:{axis}", origin="param")
            self.param_spaces[key] = Space(size, var, kind="param", name=f"{name}:{axis}", param=name, axis=axis)
        return self.param_spaces[key]

    def param_tensor(self, name: str, value: torch.Tensor) -> ATensor:
        name = self.alias.get(name, name)
        dims = [Feat(self.param_space(name, k), 0, value.shape[k]) for k in range(value.dim())]
        return ATensor(value, dims, param=name)

    def is_state(self, name: str) -> bool:
        return name in self.alias


def _norm_statistics(module: torch.nn.Module) -> set[str]:
    out = set()
    for mname, m in module.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase):
            for b in ("running_mean", "running_var"):
                out.add(f"{mname}.{b}" if mname else b)
    return out
