"""Specs written by hand, for what tracing cannot reach."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .errors import SpecError
from .spec import WeightSpaceSpec
from .vocab import ELEMENTWISE, parse_activation
from .types import (Dataflow, GroupSpec, Op, ParamSpec, ParamUse, ScaleAction, ScalingSpec, Segment, Site,
                    SiteView)

def scaling_kinds(activation: str | None) -> tuple[bool, bool]:
    """(positive, sign) scalings that an activation keeps (read from the one vocabulary, ``vocab``)."""
    if activation is None:
        return True, True
    fn = ELEMENTWISE.get(parse_activation(activation)[0])
    if fn is None:
        return False, False
    return fn.positive, fn.odd


def mlp_spec(widths: list[int], activation: str | None, bias: bool, names) -> WeightSpaceSpec:
    if len(widths) < 2:
        raise SpecError(f"an MLP needs at least an input and an output width, got {widths}")
    n = len(widths) - 1
    step = 2 if activation else 1
    names = list(names) if names is not None else [str(step * i) for i in range(n)]
    if len(names) != n:
        raise SpecError(f"{len(names)} layer names for {n} linear layers")
    positive, sign = scaling_kinds(activation)
    params, groups, scalings = [], [], []
    sites = [Site(0, "input", widths[0], "input", (Segment(None, widths[0]),))]
    ops = []
    for i, name in enumerate(names):
        out_g = name if i < n - 1 else None
        in_g = names[i - 1] if i > 0 else None
        lay = lambda g, size: (Segment(g, size),) if g else None  # noqa: E731
        w_scales, b_scales = [], []
        if out_g and (positive or sign):
            w_scales.append(ScaleAction(0, (Segment(out_g, widths[i + 1]),), +1))
            b_scales.append(ScaleAction(0, (Segment(out_g, widths[i + 1]),), +1))
        if in_g and (positive or sign):
            w_scales.append(ScaleAction(1, (Segment(in_g, widths[i]),), -1))
        params.append(ParamSpec(f"{name}.weight", (widths[i + 1], widths[i]),
                                (lay(out_g, widths[i + 1]), lay(in_g, widths[i])),
                                scales=tuple(sorted_actions(w_scales))))
        if bias:
            params.append(ParamSpec(f"{name}.bias", (widths[i + 1],), (lay(out_g, widths[i + 1]),),
                                    scales=tuple(b_scales)))
        kind = "hidden" if i < n - 1 else "output"
        acts = ((0, widths[i + 1], activation),) if activation and i < n - 1 else ()
        sites.append(Site(i + 1, name, widths[i + 1], kind, (Segment(out_g, widths[i + 1]),) if out_g
                          else (Segment(None, widths[i + 1]),), acts))
        uses = [ParamUse("weight", f"{name}.weight", ("out", "in"), ((0, widths[i + 1]), (0, widths[i])))]
        if bias:
            uses.append(ParamUse("bias", f"{name}.bias", ("out",), ((0, widths[i + 1]),)))
        ops.append(Op("linear", name, (SiteView(i, 0, widths[i]),), i + 1, tuple(uses)))
        if out_g:
            groups.append(GroupSpec(out_g, widths[i + 1], activation))
            if positive or sign:
                scalings.append(ScalingSpec(out_g, widths[i + 1], positive, sign, out_g))
    return WeightSpaceSpec(tuple(params), tuple(groups), tuple(scalings), Dataflow(tuple(sites), tuple(ops)))


def sorted_actions(actions):
    return sorted(actions, key=lambda a: (a.axis, a.exponent))


def _shape_of(v: Any) -> tuple[int, ...]:
    if isinstance(v, torch.Tensor):
        return tuple(v.shape)
    return tuple(int(x) for x in v)


def _axis_segments(name: str, k: int, spec: Any, length: int, sizes: dict[str, int]) -> tuple[Segment, ...] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        size = sizes[spec]
        return (Segment(spec, size, length // size),)
    segs, total = [], 0
    for item in spec:
        g, size, *rest = item
        inner = rest[0] if rest else 1
        segs.append(Segment(g, size, inner))
        total += size * inner
    if total != length:
        raise SpecError(f"'{name}' axis {k}: segments cover {total} entries, the axis has {length}")
    return tuple(segs)


def spec_from_axes(axes: Mapping[str, tuple], shapes: Mapping[str, Any] | None, activations, heads, scalings,
                   roles) -> WeightSpaceSpec:
    entries: dict[str, tuple[tuple[int, ...], tuple]] = {}
    for name, spec in axes.items():
        if shapes is not None:
            if name not in shapes:
                raise SpecError(f"no shape given for parameter '{name}'")
            shape, groups_ = _shape_of(shapes[name]), tuple(spec)
        else:
            if len(spec) != 2:
                raise SpecError(f"'{name}': without shapes, each entry must be (shape, groups)")
            shape, groups_ = _shape_of(spec[0]), tuple(spec[1])
        if len(groups_) != len(shape):
            raise SpecError(f"'{name}' has {len(shape)} axes but {len(groups_)} group entries were given")
        entries[name] = (shape, groups_)
    # a group's size: the shortest axis it acts on as a whole; longer axes hold blocks of entries
    sizes: dict[str, int] = {}
    for name, (shape, groups_) in entries.items():
        for k, g in enumerate(groups_):
            if isinstance(g, str):
                sizes[g] = min(sizes.get(g, shape[k]), shape[k])
            elif g is not None:
                for item in g:
                    if item[0] is not None:
                        sizes[item[0]] = item[1]
    for name, (shape, groups_) in entries.items():
        for k, g in enumerate(groups_):
            if isinstance(g, str) and shape[k] % sizes[g]:
                raise SpecError(f"'{name}' axis {k} has length {shape[k]}, not a multiple of group '{g}' "
                                f"(size {sizes[g]})")
    params = [ParamSpec(name, shape, tuple(_axis_segments(name, k, g, shape[k], sizes) for k, g in enumerate(gs)),
                        roles.get(name, "parameter"))
              for name, (shape, gs) in entries.items()]
    groups = []
    for g, size in sizes.items():
        h = heads.get(g)
        groups.append(GroupSpec(g, size, activations.get(g), tuple(h) if h else None))
    for g, (parent, block) in heads.items():
        if parent not in sizes:
            groups.append(GroupSpec(parent, sizes[g] // block))
        elif sizes[parent] * block != sizes[g]:
            raise SpecError(f"head group '{g}' (size {sizes[g]}) does not split into '{parent}' x {block}")
    for g in activations:
        if g not in sizes:
            raise SpecError(f"activation given for unknown group '{g}'")
    return WeightSpaceSpec(tuple(params), tuple(groups), tuple(scalings), None)
