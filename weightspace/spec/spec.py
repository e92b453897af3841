"""``WeightSpaceSpec``: a network's weight space, its symmetry group and its dataflow."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch

from .errors import SpecError
from .types import (Dataflow, GroupSpec, ParamSpec, ScalingSpec)

if TYPE_CHECKING:
    from .blocks import AxisAction, Block, GroupForest


@dataclass(frozen=True)
class WeightSpaceSpec:
    """The weight space of one architecture.

    ``params``   every state-dict entry, with the permutation layout of each axis
    ``groups``   the permutation groups (hidden neuron sets, channels, heads)
    ``scalings`` diagonal symmetries (positive rescaling, sign flips) where the activations allow them
    ``dataflow`` neuron sets and the ops between them (None for hand-written specs without one)

    Build one with :meth:`from_module` (``torch.fx`` tracing), :meth:`mlp`, or :meth:`from_axes`.
    """

    params: tuple[ParamSpec, ...]
    groups: tuple[GroupSpec, ...]
    scalings: tuple[ScalingSpec, ...] = ()
    dataflow: Dataflow | None = None
    # sentences from the tracer: which outputs were traced, which op removed which symmetry and why
    notes: tuple[str, ...] = field(default=(), compare=False)

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_module(cls, module: torch.nn.Module, example_inputs: Any, *, leaf_modules: tuple[type, ...] = (),
                    check: bool = True) -> "WeightSpaceSpec":
        """Trace ``module`` on ``example_inputs`` (a tensor, a tuple of positional inputs, or a dict of
        keyword inputs) and return its spec. The module is traced in eval mode.

        An op whose effect on the symmetry cannot be reasoned about raises
        :class:`~weightspace.spec.errors.UnsupportedOpError` naming the node, the op and the module.

        A module defining ``weight_space_spec()`` (a spec written by hand, e.g. a soft tree ensemble)
        gets that spec instead, checked the same way (:mod:`weightspace.symmetry.module_spec`).
        """
        if callable(getattr(module, "weight_space_spec", None)):
            from ..symmetry.module_spec import spec_from_hook

            return spec_from_hook(module, example_inputs, check=check)
        from .trace import trace_module

        return trace_module(module, example_inputs, leaf_modules=leaf_modules, check=check)

    @classmethod
    def mlp(cls, widths: Iterable[int], activation: str | None = "relu", bias: bool = True,
            names: Iterable[str] | None = None) -> "WeightSpaceSpec":
        """Spec of a plain MLP ``widths[0] -> ... -> widths[-1]``.

        Parameter names default to those of ``nn.Sequential(Linear, act, Linear, act, ..., Linear)``
        (``"0.weight"``, ``"2.weight"``, ...); pass ``names`` (one per Linear) for other layouts.
        """
        from .manual import mlp_spec

        return mlp_spec(list(widths), activation, bias, names)

    @classmethod
    def from_axes(cls, axes: Mapping[str, tuple], shapes: Mapping[str, Any] | None = None, *,
                  activations: Mapping[str, str] | None = None, heads: Mapping[str, tuple[str, int]] | None = None,
                  scalings: Iterable[ScalingSpec] = (), roles: Mapping[str, str] | None = None) -> "WeightSpaceSpec":
        """A spec written by hand: ``axes[name]`` gives, per axis of that parameter, a group name or None.

        ``shapes`` maps names to shapes or tensors (a state dict works); without it, each entry of
        ``axes`` must be ``(shape, groups)``. A group's size is read off the axes it acts on (an axis
        of length ``k * size`` means each element owns ``k`` consecutive entries, as in a flattened
        conv feature map)::

            WeightSpaceSpec.from_axes({"fc1.weight": ("h", None), "fc1.bias": ("h",),
                                       "fc2.weight": (None, "h"), "fc2.bias": (None,)}, model.state_dict())
        """
        from .manual import spec_from_axes

        return spec_from_axes(axes, shapes, activations or {}, heads or {}, tuple(scalings), roles or {})

    # ------------------------------------------------------------------------------ lookup
    @cached_property
    def _by_name(self) -> dict[str, ParamSpec]:
        return {p.name: p for p in self.params}

    @cached_property
    def _groups(self) -> dict[str, GroupSpec]:
        return {g.name: g for g in self.groups}

    @cached_property
    def _scalings(self) -> dict[str, ScalingSpec]:
        return {s.name: s for s in self.scalings}

    def __getitem__(self, name: str) -> ParamSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise SpecError(f"the spec has no parameter '{name}'") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def group(self, name: str) -> GroupSpec:
        try:
            return self._groups[name]
        except KeyError:
            known = ", ".join(self._groups) or "none"
            raise SpecError(f"unknown group '{name}' (groups of this spec: {known})") from None

    def scaling(self, name: str) -> ScalingSpec:
        try:
            return self._scalings[name]
        except KeyError:
            known = ", ".join(self._scalings) or "none"
            raise SpecError(f"unknown scaling '{name}' (scalings of this spec: {known})") from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @cached_property
    def weight_names(self) -> tuple[str, ...]:
        """Entries that are learned-on weights (parameters and norm statistics), in spec order."""
        return tuple(p.name for p in self.params if p.in_weight_space)

    @cached_property
    def num_weights(self) -> int:
        """Length of the flattened weight vector ``[B, P]``."""
        return sum(self[n].numel for n in self.weight_names)

    # ------------------------------------------------------------------------------ where groups act
    # One query, computed once per spec (see ``blocks.py``); symmetry actions, alignment, graphs and
    # layers all read it.
    def blocks(self) -> dict[str, tuple["Block", ...]]:
        """Per group, every stretch of every tensor axis it acts on (:class:`~weightspace.spec.blocks.Block`)."""
        from .blocks import group_blocks

        return group_blocks(self)

    def group_slices(self, group: str) -> tuple["Block", ...]:
        """The blocks group ``group`` acts on (empty for a head parent, which acts through its children)."""
        self.group(group)  # unknown names raise
        return self.blocks().get(group, ())

    def axis_actions(self, name: str) -> tuple["AxisAction", ...]:
        """The axes of parameter ``name`` that permutations act on (empty if none)."""
        from .blocks import axis_actions

        return axis_actions(self).get(name, ())

    def scale_actions(self, name: str) -> tuple["AxisAction", ...]:
        """The axes of parameter ``name`` that scalings / sign flips act on, with their exponents."""
        from .blocks import scale_actions

        return scale_actions(self).get(name, ())

    def group_forest(self) -> "GroupForest":
        """Head structure of the groups: roots, children, an order with parents first."""
        from .blocks import group_forest

        return group_forest(self)

    def params_of_group(self, group: str) -> tuple[tuple[str, int], ...]:
        """``(parameter, axis)`` pairs the group acts on."""
        return tuple(dict.fromkeys((b.param, b.axis) for b in self.blocks().get(group, ())))

    @property
    def hidden_groups(self) -> tuple[GroupSpec, ...]:
        """Groups that act on at least one parameter axis (head parents act through their children)."""
        used = self.blocks()
        return tuple(g for g in self.groups if g.name in used)

    # ------------------------------------------------------------------------------ checks
    def check_state_dict(self, state_dict: Mapping[str, torch.Tensor], what: str = "state dict") -> None:
        """Raise :class:`SpecError` naming the first parameter that is missing, extra or misshapen."""
        for p in self.params:
            if p.name not in state_dict:
                raise SpecError(f"{what} has no entry '{p.name}' (shape {tuple(p.shape)}) that the spec needs")
            shape = tuple(state_dict[p.name].shape)
            if shape != p.shape:
                raise SpecError(f"{what} entry '{p.name}' has shape {shape}, the spec expects {p.shape}")
        extra = [k for k in state_dict if k not in self._by_name]
        if extra:
            raise SpecError(f"{what} has entry '{extra[0]}' that the spec does not know")

    def first_difference(self, other: "WeightSpaceSpec") -> str | None:
        """A sentence naming the first parameter where two specs differ (None when equal)."""
        for a, b in zip(self.params, other.params):
            if a.name != b.name:
                return f"parameter #{self.params.index(a)} is '{a.name}' in one spec and '{b.name}' in the other"
            if a.shape != b.shape:
                return f"parameter '{a.name}' has shape {a.shape} in one spec and {b.shape} in the other"
            if a.axes != b.axes:
                return f"parameter '{a.name}' has a different symmetry layout in the two specs"
        if len(self.params) != len(other.params):
            longer = self if len(self.params) > len(other.params) else other
            extra = longer.params[min(len(self.params), len(other.params))].name
            return f"parameter '{extra}' exists in only one of the specs"
        if self.groups != other.groups:
            return "the specs have different groups"
        return None

    def require_same(self, other: "WeightSpaceSpec") -> None:
        diff = None if other is self else self.first_difference(other)
        if diff:
            raise SpecError(f"weight spaces do not match: {diff}")

    # ------------------------------------------------------------------------------ text
    def __str__(self) -> str:
        from .printing import format_spec

        return format_spec(self)

    def __repr__(self) -> str:
        return (f"WeightSpaceSpec({len(self.params)} tensors, {self.num_weights} weights, "
                f"{len(self.groups)} groups, {len(self.scalings)} scalings)")

    # ------------------------------------------------------------------------------ serialization
    def to_dict(self) -> dict:
        return {"version": 1, "params": [asdict(p) for p in self.params],
                "groups": [asdict(g) for g in self.groups],
                "scalings": [asdict(s) for s in self.scalings],
                "dataflow": asdict(self.dataflow) if self.dataflow is not None else None,
                "notes": list(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping) -> "WeightSpaceSpec":
        from .serialize import spec_from_dict

        return spec_from_dict(d)

    @classmethod
    def from_json(cls, text: str) -> "WeightSpaceSpec":
        return cls.from_dict(json.loads(text))
