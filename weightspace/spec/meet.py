"""The symmetries several specs of one weight space share: for a zoo that mixes activations.

Networks of the same shapes but different activations (a model zoo drawing ReLU or tanh per model)
live in one weight space, but not every symmetry holds for all of them: ReLU allows positive
rescaling, tanh sign flips, and a batch of both allows neither. :func:`common_symmetries` keeps what
holds for every spec: the same parameters and permutation groups (required), each diagonal symmetry
only with the flags all specs give it, and a group's activation name only where all agree.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from .errors import SpecError
from .spec import WeightSpaceSpec

__all__ = ["common_symmetries"]


def common_symmetries(specs: Sequence[WeightSpaceSpec]) -> WeightSpaceSpec:
    """One spec whose every symmetry is a symmetry of each of ``specs`` (the first spec's records
    otherwise: parameters, dataflow)."""
    specs = list(specs)
    if not specs:
        raise SpecError("common_symmetries needs at least one spec")
    first = specs[0]
    for other in specs[1:]:
        if [(p.name, p.shape) for p in other.params] != [(p.name, p.shape) for p in first.params] or \
                [(g.name, g.size) for g in other.groups] != [(g.name, g.size) for g in first.groups]:
            raise SpecError("these specs are not one weight space: their parameters or permutation groups "
                            "differ (trace networks of one architecture)")
    groups = tuple(replace(g, activation=g.activation if all(o.groups[i].activation == g.activation
                                                             for o in specs[1:]) else None)
                   for i, g in enumerate(first.groups))
    scalings = []
    for s in first.scalings:
        mates = [next((t for t in o.scalings if t.name == s.name and t.size == s.size), None) for o in specs[1:]]
        if any(m is None for m in mates):
            continue
        positive = s.positive and all(m.positive for m in mates)
        sign = s.sign and all(m.sign for m in mates)
        if positive or sign:
            scalings.append(replace(s, positive=positive, sign=sign))
    return replace(first, groups=groups, scalings=tuple(scalings))
