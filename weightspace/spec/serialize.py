"""Specs to and from plain dicts (JSON), so datasets can store the spec beside the weights.

Op kinds are stored as their plain string values (``"linear"``); :class:`~.types.Op` turns them back
into :class:`~.types.OpKind` members and rejects unknown ones with a :class:`SpecError`."""
from __future__ import annotations

from typing import Mapping

from .errors import SpecError
from .spec import WeightSpaceSpec
from .types import (Dataflow, GroupSpec, Op, ParamSpec, ParamUse, ScaleAction, ScalingSpec, Segment, Site,
                    SiteView)


def _layout(x):
    return None if x is None else tuple(Segment(s["group"], s["size"], s.get("inner", 1)) for s in x)


def _tuples(x):
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def spec_from_dict(d: Mapping) -> WeightSpaceSpec:
    if d.get("version") != 1:
        raise SpecError(f"unknown spec format version {d.get('version')!r}")
    params = tuple(ParamSpec(p["name"], tuple(p["shape"]), tuple(_layout(a) for a in p["axes"]), p["role"],
                             tuple(ScaleAction(s["axis"], _layout(s["layout"]), s["exponent"]) for s in p["scales"]),
                             p.get("dtype", "float32"))
                   for p in d["params"])
    groups = tuple(GroupSpec(g["name"], g["size"], g.get("activation"),
                             tuple(g["heads"]) if g.get("heads") else None) for g in d["groups"])
    scalings = tuple(ScalingSpec(**s) for s in d.get("scalings", ()))
    flow = None
    if d.get("dataflow") is not None:
        f = d["dataflow"]
        sites = tuple(Site(s["id"], s["name"], s["size"], s["kind"], _layout(s["layout"]),
                           tuple(tuple(a) for a in s["activations"])) for s in f["sites"])
        ops = tuple(Op(o["kind"], o["name"], tuple(SiteView(**v) for v in o["inputs"]), o["output"],
                       tuple(ParamUse(p["role"], p["name"], tuple(p["dims"]), tuple(tuple(r) for r in p["ranges"]))
                             for p in o["params"]),
                       tuple((k, _tuples(v)) for k, v in o["attrs"]))
                    for o in f["ops"])
        flow = Dataflow(sites, ops)
    return WeightSpaceSpec(params, groups, scalings, flow, tuple(d.get("notes", ())))
