"""Turn a finished trace into a :class:`WeightSpaceSpec`: name the groups, lay out every parameter
axis, keep the scaling symmetries that survived, and freeze the dataflow."""
from __future__ import annotations

from collections import defaultdict

from ..errors import TraceError
from ..spec import WeightSpaceSpec
from ..types import (Dataflow, GroupSpec, Op, ParamSpec, ParamUse, ScaleAction, ScalingSpec, Segment, Site,
                     SiteView)
from . import structure as S
from .labels import Feat
from .rules.elementwise import ACTIVATIONS
from .state import TraceState

_NOT_ACTIVATIONS = {"neg", "negative", "nan_to_num", "pad", "sum", "mean", "nansum", "nanmean", "masked_fill",
                    "where", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}
_ACTIVATION_NAMES = (set(ACTIVATIONS) | {"hardtanh", "clamp", "relu", "prelu", "softmax", "log_softmax",
                                         "softmin", "normalize"}) - _NOT_ACTIVATIONS


class _Namer:
    """Stable unique names for group variables and head structures."""

    def __init__(self):
        self.names: dict[int, str] = {}
        self.used: set[str] = set()
        self.groups: dict[str, GroupSpec] = {}

    def _name(self, v: S.Var) -> str:
        if id(v) not in self.names:
            base = v.name or "group"
            name, k = base, 1
            while name in self.used:
                k += 1
                name = f"{base}#{k}"
            self.used.add(name)
            self.names[id(v)] = name
        return self.names[id(v)]

    def layout(self, v: S.Var, where: str) -> tuple[Segment, ...]:
        try:
            segs = self._expand(v)
        except S.StructureError as e:
            raise TraceError(f"the symmetry of {where} has a structure weightspace cannot express: {e}") from e
        return _merge_fixed(segs)

    def _expand(self, v: S.Var) -> list[Segment]:
        v = S.normalize(S.find(v))
        if v.state == "fixed" or (v.state == "leaf" and v.origin != "op"):
            return [Segment(None, v.size)]
        if v.state == "leaf":
            name = self._name(v)
            self.groups.setdefault(name, GroupSpec(name, v.size))
            return [Segment(name, v.size)]
        if v.state == "concat":
            return [s for c in v.children for s in self._expand(c)]
        o, i = S.find(v.outer), S.find(v.inner)
        if S.is_trivial(i):
            return [Segment(s.group, s.size, s.inner * i.size) for s in self._expand(o)]
        if S.is_trivial(o):
            fibres = [self._expand(i)] * o.size
            return [s for f in fibres for s in f]
        if v.shared:
            raise S.StructureError("one permutation of blocks combined with one shared within-block "
                                   "permutation (a Kronecker product) acting on a single axis")
        if o.state != "leaf" or i.state != "leaf" or o.origin != "op" or i.origin != "op":
            raise S.StructureError("nested head structures")
        heads = self._name(o)
        self.groups.setdefault(heads, GroupSpec(heads, o.size))
        name = self._name(v)
        self.groups.setdefault(name, GroupSpec(name, v.size, heads=(heads, i.size)))
        return [Segment(name, v.size)]


def _merge_fixed(segs: list[Segment]) -> tuple[Segment, ...]:
    out: list[Segment] = []
    for s in segs:
        if s.group is None and out and out[-1].group is None:
            out[-1] = Segment(None, out[-1].length + s.length)
        elif s.group is None and s.inner != 1:
            out.append(Segment(None, s.length))
        else:
            out.append(s)
    return tuple(out)


def _axis_layout(layout: tuple[Segment, ...]):
    return None if all(s.group is None for s in layout) else layout


def extract(state: TraceState) -> WeightSpaceSpec:
    namer = _Namer()
    # --- parameters
    layouts: dict[str, tuple] = {}
    for name in state.state_names:
        canon = state.alias[name]
        if canon in layouts:
            continue
        t = state.tensors[canon]
        axes = []
        for k in range(t.dim()):
            space = state.param_spaces.get((canon, k))
            axes.append(None if space is None else _axis_layout(namer.layout(space.var, f"'{canon}' axis {k}")))
        layouts[canon] = tuple(axes)
    # --- sites
    sites = []
    for s in state.sites:
        sites.append(Site(s.site_id, s.name, s.size, s.kind, namer.layout(s.var, f"site '{s.name}'"),
                          tuple(s.activations)))
    # --- scalings
    scalings, actions = _scalings(state, namer)
    # --- groups: order of first appearance, activation from the sites
    activation: dict[str, str] = {}
    for s, site in zip(state.sites, sites):
        for start, stop, op in s.activations:
            base = op.split("(")[0]
            if base not in _ACTIVATION_NAMES:
                continue
            for g in _groups_in(site.layout, start, stop):
                activation.setdefault(g, base)
    groups = []
    for g in namer.groups.values():
        groups.append(GroupSpec(g.name, g.size, activation.get(g.name), g.heads))
    params = []
    for name in state.state_names:
        canon = state.alias[name]
        t = state.tensors[canon]
        params.append(ParamSpec(name, tuple(t.shape), layouts[canon], state.role[name],
                                tuple(actions.get(canon, ())), str(t.dtype).replace("torch.", "")))
    ops = tuple(_freeze_op(op, state) for op in state.ops)
    return WeightSpaceSpec(tuple(params), tuple(groups), tuple(scalings), Dataflow(tuple(sites), ops))


def _groups_in(layout, start: int, stop: int) -> list[str]:
    out, pos = [], 0
    for seg in layout:
        end = pos + seg.length
        if seg.group is not None and pos < stop and end > start:
            out.append(seg.group)
        pos = end
    return out


# ------------------------------------------------------------------------------------ scalings


def _diag_segments(v: S.Var) -> list[tuple[S.Var | None, int]]:
    v = S.find(v)
    if v.state == "fixed":
        return [(None, v.size)]
    if v.state == "leaf":
        return [(v, v.size)]
    if v.state == "concat":
        return [s for c in v.children for s in _diag_segments(c)]
    raise S.StructureError("internal: a diagonal variable with head structure")  # pragma: no cover


def _scalings(state: TraceState, namer: _Namer):
    pieces = []  # (param, axis, exponent, start, [(leaf|None, count, inner)])
    for sc in state.scales:
        f = sc.site
        segs = _diag_segments(f.space.diag_at(f.start, f.length))
        lay = [(leaf, n, f.inner) for leaf, n in segs] * f.outer
        pieces.append((sc.param, sc.axis, sc.exponent, sc.start, lay, f))
    writes, reads, params_of = defaultdict(int), defaultdict(int), defaultdict(set)
    for param, axis, exp, start, lay, f in pieces:
        for leaf, n, inner in lay:
            if leaf is None:
                continue
            (writes if exp > 0 else reads)[id(leaf)] += 1
            params_of[id(leaf)].add(param)
    valid: dict[int, S.Var] = {}
    first_site: dict[int, Feat] = {}
    for param, axis, exp, start, lay, f in pieces:
        for leaf, n, inner in lay:
            if leaf is None:
                continue
            if exp > 0:
                first_site.setdefault(id(leaf), f)
            ok = (leaf.state == "leaf" and leaf.kinds and writes[id(leaf)] and reads[id(leaf)]
                  and not (params_of[id(leaf)] & state.unaccounted_params))
            if ok:
                valid[id(leaf)] = leaf
    names: dict[int, str] = {}
    used: set[str] = set()
    specs = []
    for key, leaf in valid.items():
        base = leaf.name or "scaling"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}#{k}"
        used.add(name)
        names[key] = name
        group = _scaling_group(first_site.get(key), leaf, namer)
        specs.append(ScalingSpec(name, leaf.size, "positive" in leaf.kinds, "sign" in leaf.kinds, group))
    # per parameter axis, stack non-overlapping pieces into layouts
    grouped: dict[tuple[str, int, int], list] = defaultdict(list)
    for param, axis, exp, start, lay, f in pieces:
        segs = tuple(Segment(names.get(id(leaf)) if leaf is not None else None, n, inner) for leaf, n, inner in lay)
        if all(s.group is None for s in segs):
            continue
        entry = (start, segs)
        if entry not in grouped[(param, axis, exp)]:
            grouped[(param, axis, exp)].append(entry)
    actions: dict[str, list[ScaleAction]] = defaultdict(list)
    for (param, axis, exp), entries in grouped.items():
        size = state.tensors[param].shape[axis]
        layers: list[list] = []
        for start, segs in sorted(entries):
            length = sum(s.length for s in segs)
            for layer in layers:
                if all(start >= a + n or start + length <= a for a, n, _ in layer):
                    layer.append((start, length, segs))
                    break
            else:
                layers.append([(start, length, segs)])
        for layer in layers:
            out, pos = [], 0
            for start, length, segs in sorted(layer):
                if start > pos:
                    out.append(Segment(None, start - pos))
                out.extend(segs)
                pos = start + length
            if pos < size:
                out.append(Segment(None, size - pos))
            actions[param].append(ScaleAction(axis, _merge_fixed(out), exp))
    for param in actions:
        actions[param].sort(key=lambda a: (a.axis, a.exponent))
    return specs, actions


def _scaling_group(f: Feat | None, leaf: S.Var, namer: _Namer) -> str | None:
    if f is None:
        return None
    try:
        lay = namer.layout(f.space.var_at(f.start, f.length), "a scaling")
    except TraceError:
        return None
    groups = {s.group for s in lay}
    return groups.pop() if len(groups) == 1 else None


# ------------------------------------------------------------------------------------ dataflow


def _view(f: Feat) -> SiteView:
    return SiteView(f.space.site_id, f.start, f.length, f.inner, f.outer)


def _freeze_op(op, state: TraceState) -> Op:
    params = tuple(ParamUse(p.role, p.name, p.dims, p.ranges) for p in op.params)
    attrs = tuple(sorted((k, _freeze(v)) for k, v in op.attrs.items()))
    return Op(op.kind, op.name, tuple(_view(f) for f in op.inputs), op.output.site_id, params, attrs)


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v
