"""A spec that carries symmetry records beyond neuron permutations and diagonal scalings.

Decision: a new kind of symmetry needs a *record* saying where it acts (which tensors, which axes,
the structure that decides its elements) and a :class:`~weightspace.symmetry.kinds.SymmetryKind`
that reads the record to draw, check, apply, invert and compose elements. The record travels with
the spec, so every consumer that holds a spec (``random_element``, ``act``, alignment, merging) sees
the new symmetry without special cases. :class:`SpecWithSymmetries` is a
:class:`~weightspace.WeightSpaceSpec` with one extra field, ``symmetries``: a tuple of frozen
records; kinds look them up with :func:`symmetry_records` (which also works on plain specs, where
it finds none), so the field can later move into ``WeightSpaceSpec`` itself without changing a kind.

Build one from any spec with :func:`with_symmetries` (a module's ``weight_space_spec()`` does this;
see :class:`weightspace.models.SoftTreeEnsemble`). Records are serialized by type name: register the
record class in :data:`RECORDS`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec

RECORDS: dict[str, type] = {}
"""Record type name -> frozen dataclass, for :meth:`SpecWithSymmetries.to_dict` / ``from_dict``."""


def register_record(cls: type) -> type:
    """Make a record class known by its ``record_type`` attribute (for serialization)."""
    name = getattr(cls, "record_type", "")
    if not name:
        raise SpecError(f"symmetry record class {cls.__name__} needs a 'record_type' name")
    RECORDS[name] = cls
    return cls


@dataclass(frozen=True)
class SpecWithSymmetries(WeightSpaceSpec):
    """A :class:`~weightspace.WeightSpaceSpec` plus ``symmetries``: records of further kinds of
    symmetry (tree flips and splitting orders: :class:`~weightspace.symmetry.trees.TreeStructure`)."""

    symmetries: tuple[Any, ...] = ()

    def first_difference(self, other: WeightSpaceSpec) -> str | None:
        diff = super().first_difference(other)
        if diff is None and symmetry_records(self) != symmetry_records(other):
            return "the specs carry different symmetry records (tree structures or other kinds)"
        return diff

    def __str__(self) -> str:
        extra = "\n".join(f"  {r!r}" for r in self.symmetries)
        return super().__str__() + (f"\n\n  further symmetries\n{extra}" if extra else "")

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", {len(self.symmetries)} further symmetries)"

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["symmetries"] = [{"type": r.record_type, **asdict(r)} for r in self.symmetries]
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> "SpecWithSymmetries":
        from . import trees  # noqa: F401  (registers the built-in record types)

        base = WeightSpaceSpec.from_dict(d)
        records = []
        for r in d.get("symmetries", ()):
            r = dict(r)
            kind = r.pop("type", None)
            if kind not in RECORDS:
                raise SpecError(f"unknown symmetry record type {kind!r} (known: {', '.join(RECORDS) or 'none'})")
            records.append(RECORDS[kind](**r))
        return with_symmetries(base, *records)


def symmetry_records(spec: WeightSpaceSpec, of_type: type | None = None) -> tuple[Any, ...]:
    """The spec's further symmetry records (all, or those of one record class); ``()`` for a plain spec."""
    records = tuple(getattr(spec, "symmetries", ()))
    return records if of_type is None else tuple(r for r in records if isinstance(r, of_type))


def with_symmetries(spec: WeightSpaceSpec, *records: Any) -> SpecWithSymmetries:
    """``spec`` carrying ``records`` in addition to its own (each record is checked against the spec
    by its ``validate(spec)`` method when it has one)."""
    base = {f.name: getattr(spec, f.name) for f in fields(WeightSpaceSpec)}
    out = SpecWithSymmetries(**base, symmetries=(*symmetry_records(spec), *records))
    for r in records:
        check = getattr(r, "validate", None)
        if check is not None:
            check(out)
    return out
