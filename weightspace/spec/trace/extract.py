"""Turn a finished trace into a :class:`WeightSpaceSpec`: name the groups, lay out every parameter
axis, keep the scaling symmetries that survived, and freeze the dataflow."""
from __future__ import annotations

from collections import defaultdict

from ..errors import TraceError
from ..spec import WeightSpaceSpec
from ..types import (Dataflow, GroupSpec, Op, ParamSpec, ParamUse, ScaleAction, ScalingSpec, Segment, Site,
                     SiteView)
from ..vocab import ACTIVATION_NAMES, parse_activation
from . import structure as S
from .labels import Feat
from .notes import trace_notes
from .state import TraceState


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
        return [Segment(self._whole(v), v.size)]

    def _whole(self, v: S.Var) -> str:
        """The group of a variable acting on its indices as one group: a free set, or blocks moved by
        a parent group (itself possibly made of blocks) and permuted freely inside."""
        v = S.normalize(S.find(v))
        if v.state == "leaf" and v.origin == "op":
            name = self._name(v)
            self.groups.setdefault(name, GroupSpec(name, v.size))
            return name
        if v.state == "wreath" and not v.shared:
            i = S.find(v.inner)
            if i.state == "leaf" and i.origin == "op":
                parent = self._whole(v.outer)
                name = self._name(v)
                self.groups.setdefault(name, GroupSpec(name, v.size, heads=(parent, i.size)))
                return name
        if v.state == "wreath" and v.shared:
            raise S.StructureError("one permutation of blocks combined with one shared within-block "
                                   "permutation (a Kronecker product) acting on a single axis")
        raise S.StructureError("blocks that are themselves split into different kinds of features")


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


def _restrict_products(state: TraceState) -> None:
    """A block permutation combined with one within-block permutation shared by all blocks (the
    channels of a grouped convolution) is a Kronecker product, which a layout cannot express; keep
    the block permutation and pin the within-block order, everywhere at once."""
    seen: set[int] = set()
    stack = [sp.var for sp in state.param_spaces.values()] + [s.var for s in state.sites]
    while stack:
        v = S.normalize(S.find(stack.pop()))
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v.state == "concat":
            stack.extend(v.children)
        elif v.state == "wreath":
            if v.shared and not S.is_trivial(v.outer) and not S.is_trivial(v.inner):
                state.pins.append((list(S.leaves(v.inner)), "blocks that move together with one within-block "
                                   "order shared by all blocks (a Kronecker product: the input channels of a "
                                   "grouped convolution, or q / k heads that must match elementwise) cannot be "
                                   "laid out; the blocks stay permutable and the within-block order is pinned",
                                   False))
                S.fix(v.inner)
            stack.extend([v.outer, v.inner])


def _reconcile_shared_params(state: TraceState) -> None:
    """A parameter is one tensor: every op that uses the same entries must ask for the same
    rescaling of them. Matching demands merge their scalings; differing ones cancel them."""
    by_use: dict[int, list] = defaultdict(list)
    for sc in state.scales:
        by_use[sc.use].append(sc)
    for param, uses in state.param_uses.items():
        uses = list(dict(uses).items())  # one entry per use
        for i in range(len(uses)):
            for j in range(i + 1, len(uses)):
                (u1, r1), (u2, r2) = uses[i], uses[j]
                if not all(a1 < b2 and a2 < b1 for (a1, b1), (a2, b2) in zip(r1, r2)):
                    continue  # disjoint slices of the parameter
                s1 = sorted((sc for sc in by_use[u1] if sc.param == param), key=_sig)
                s2 = sorted((sc for sc in by_use[u2] if sc.param == param), key=_sig)
                if [_sig(a) for a in s1] == [_sig(b) for b in s2]:
                    for a, b in zip(s1, s2):
                        S.unify(_diag_var(a), _diag_var(b))
                else:
                    for sc in s1 + s2:
                        S.fix(_diag_var(sc))


def _sig(sc) -> tuple:
    return (sc.axis, sc.start, sc.length, sc.exponent, sc.site.inner, sc.site.outer)


def _diag_var(sc) -> S.Var:
    return sc.site.space.diag_at(sc.site.start, sc.site.length)


def extract(state: TraceState, output_note: str | None = None) -> WeightSpaceSpec:
    _reconcile_shared_params(state)
    _restrict_products(state)
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
    for space, start, stop, label in state.composites:  # named composites first (composite.py)
        for g in _groups_in(sites[space.site_id].layout, start, stop):
            activation.setdefault(g, label)
    for s, site in zip(state.sites, sites):
        for start, stop, label in s.activations:
            base, _ = parse_activation(label)
            if base not in ACTIVATION_NAMES:
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
    return WeightSpaceSpec(tuple(params), tuple(groups), tuple(scalings), Dataflow(tuple(sites), ops),
                           trace_notes(state, output_note))


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
        for start, segs in sorted(entries, key=lambda e: e[0]):
            length = sum(s.length for s in segs)
            for layer in layers:
                if all(start >= a + n or start + length <= a for a, n, _ in layer):
                    layer.append((start, length, segs))
                    break
            else:
                layers.append([(start, length, segs)])
        for layer in layers:
            out, pos = [], 0
            for start, length, segs in sorted(layer, key=lambda e: e[0]):
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
