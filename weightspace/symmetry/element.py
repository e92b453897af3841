"""A typed element of a spec's whole symmetry group, and the one function that applies it.

``random_element(spec)`` draws permutations of every group, positive factors for every scaling
where the activation is positively homogeneous and signs where it is odd; ``act(params, spec, g)``
applies the element to a state dict, a WeightSpace or features ``[B, C, *shape]``. An element is
kept in the canonical form *permute, then apply the diagonal kinds* (see :mod:`.kinds`), which makes
:meth:`GroupElement.inverse` and :meth:`GroupElement.compose` exact::

    g = ws.random_element(spec, generator=torch.Generator().manual_seed(0))
    moved = ws.act(model.state_dict(), spec, g)                 # same function, other weights
    back = ws.act(moved, spec, g.inverse())                     # the original weights
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from .kinds import KINDS

Values = dict[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class GroupElement:
    """An element of ``spec``'s symmetry group: ``parts[kind] = {group or scaling name: values}``.

    Values are ``[size]`` for one element or ``[B, size]`` for one element per network (lined up
    with the first leading dim of the weights it acts on). Groups or scalings left out stay fixed.
    Build one with :func:`random_element`, :meth:`identity` or :meth:`from_permutations`.
    """

    spec: WeightSpaceSpec
    parts: Mapping[str, Values] = field(default_factory=dict)

    def __post_init__(self):
        checked = {}
        for kind, values in self.parts.items():
            if kind not in KINDS:
                raise SpecError(f"unknown symmetry kind '{kind}' (known: {', '.join(KINDS)})")
            if values:
                checked[kind] = KINDS[kind].check(self.spec, values)
        object.__setattr__(self, "parts", checked)
        sizes = {v.shape[0] for vals in checked.values() for v in vals.values() if v.dim() == 2}
        if len(sizes) > 1:
            raise SpecError(f"group element mixes per-network values for different batch sizes {sorted(sizes)}")

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def identity(cls, spec: WeightSpaceSpec) -> "GroupElement":
        return cls(spec, {})

    @classmethod
    def from_permutations(cls, spec: WeightSpaceSpec, perms: Mapping[str, Any]) -> "GroupElement":
        """Wrap the permutation dict that ``random_permutation`` / ``weight_matching`` return."""
        return cls(spec, {"permutation": dict(perms)})

    # ------------------------------------------------------------------------------ views
    @property
    def permutation(self) -> Values:
        return dict(self.parts.get("permutation", {}))

    @property
    def scaling(self) -> Values:
        return dict(self.parts.get("scaling", {}))

    @property
    def sign(self) -> Values:
        return dict(self.parts.get("sign", {}))

    @property
    def batch_size(self) -> int | None:
        """B when the element holds one element per network, else None."""
        for vals in self.parts.values():
            for v in vals.values():
                if v.dim() == 2:
                    return v.shape[0]
        return None

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}: {len(v)}" for k, v in self.parts.items()) or "identity"
        return f"GroupElement({kinds}{'' if self.batch_size is None else f', batch {self.batch_size}'})"

    # ------------------------------------------------------------------------------ group structure
    def act(self, params: Any):
        """Apply to a state dict, a WeightSpace or features (same as :func:`act`)."""
        for name, kind in KINDS.items():
            if name in self.parts:
                params = kind.apply(params, self.spec, self.parts[name])
        return params

    def inverse(self) -> "GroupElement":
        """The element undoing this one: ``act(act(w, g), g.inverse()) == w``."""
        perms = self.parts.get("permutation", {})
        inv_perms = KINDS["permutation"].inverse(self.spec, perms)
        parts = {"permutation": inv_perms}
        for name, kind in KINDS.items():
            if name != "permutation" and name in self.parts:
                vals = kind.inverse(self.spec, self.parts[name])
                parts[name] = kind.relabel(self.spec, vals, inv_perms) if inv_perms else vals
        return GroupElement(self.spec, parts)

    def compose(self, other: "GroupElement") -> "GroupElement":
        """The element acting as ``self`` and then ``other``: ``act(w, g.compose(h)) == act(act(w, g), h)``."""
        other = as_element(self.spec, other)
        if None not in (self.batch_size, other.batch_size) and self.batch_size != other.batch_size:
            raise SpecError(f"cannot compose group elements for {self.batch_size} and {other.batch_size} networks")
        p1, p2 = self.parts.get("permutation", {}), other.parts.get("permutation", {})
        parts = {"permutation": KINDS["permutation"].combine(self.spec, p1, p2)}
        for name, kind in KINDS.items():
            if name == "permutation" or (name not in self.parts and name not in other.parts):
                continue
            first = self.parts.get(name, {})
            if first and p2:
                first = kind.relabel(self.spec, first, p2)
            parts[name] = kind.combine(self.spec, first, other.parts.get(name, {}))
        return GroupElement(self.spec, parts)

    def node_permutation(self) -> torch.Tensor:
        """The relabeling of parameter-graph nodes that the permutation part induces (see
        :func:`weightspace.node_permutation`); the diagonal parts change edge values, not labels."""
        from ..graph.build import node_permutation

        if self.batch_size is not None:
            raise SpecError("node_permutation needs one element; this one holds one per network (take g[i])")
        return node_permutation(self.spec, self.permutation)

    def __getitem__(self, i: int) -> "GroupElement":
        """The element of network ``i`` of a per-network element."""
        return GroupElement(self.spec, {k: {n: v[i] if v.dim() == 2 else v for n, v in vals.items()}
                                        for k, vals in self.parts.items()})

    def to(self, device) -> "GroupElement":
        return GroupElement(self.spec, {k: {n: v.to(device) for n, v in vals.items()}
                                        for k, vals in self.parts.items()})


def as_element(spec: WeightSpaceSpec, element: Any) -> GroupElement:
    """A :class:`GroupElement` of ``spec`` from an element or a permutation dict ``{group: perm}``."""
    if isinstance(element, GroupElement):
        spec.require_same(element.spec)
        return element
    if isinstance(element, Mapping):
        return GroupElement.from_permutations(spec, element)
    raise SpecError(f"expected a GroupElement or a dict of permutations {{group: LongTensor}}, "
                    f"got {type(element).__name__}")


def random_element(spec: WeightSpaceSpec, generator: torch.Generator | None = None, *,
                   batch_size: int | None = None, kinds: Iterable[str] | None = None,
                   low: float = 0.5, high: float = 2.0) -> GroupElement:
    """A random element of the spec's whole group: uniform permutations of every group, log-uniform
    factors in ``[low, high]`` for positive scalings, uniform signs for sign flips (``kinds`` picks a
    subset, e.g. ``("permutation",)``). ``batch_size`` draws one element per network."""
    chosen = list(KINDS) if kinds is None else list(kinds)
    for k in chosen:
        if k not in KINDS:
            raise SpecError(f"unknown symmetry kind '{k}' (known: {', '.join(KINDS)})")
    parts = {k: KINDS[k].random(spec, generator, batch_size, low=low, high=high) for k in KINDS if k in chosen}
    return GroupElement(spec, parts)


def act(params: Any, spec: WeightSpaceSpec, element: Any):
    """Apply a group element (a :class:`GroupElement` or a permutation dict) to a state dict, a
    WeightSpace or features ``name -> Tensor[*lead, *shape]``; returns the same kind of object."""
    return as_element(spec, element).act(params)
