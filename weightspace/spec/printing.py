"""Readable text for a spec."""
from __future__ import annotations

from .types import Layout


def format_layout(layout: Layout | None) -> str:
    if layout is None:
        return "-"
    parts = []
    for s in layout:
        if s.group is None:
            parts.append(f"-{s.length}" if len(layout) > 1 else "-")
        else:
            parts.append(s.group + (f"*{s.inner}" if s.inner > 1 else ""))
    return "|".join(parts)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def format_spec(spec) -> str:
    lines = [f"WeightSpaceSpec: {len(spec.params)} tensors, {spec.num_weights:,} weights, "
             f"{len(spec.groups)} permutation groups, {len(spec.scalings)} scaling symmetries"]
    rows = [["parameter", "shape", "role", "axes"]]
    for p in spec.params:
        rows.append([p.name, str(tuple(p.shape)), p.role, "[" + ", ".join(format_layout(a) for a in p.axes) + "]"])
    lines += _table(rows)
    if spec.groups:
        lines.append("")
        rows = [["group", "size", "activation", "structure"]]
        for g in spec.groups:
            structure = f"whole heads move with {g.heads[0]}, free within heads of {g.heads[1]}" if g.heads else "free"
            rows.append([g.name, str(g.size), g.activation or "-", structure])
        lines += _table(rows)
    if spec.scalings:
        lines.append("")
        rows = [["scaling", "size", "group", "kinds"]]
        for s in spec.scalings:
            kinds = [k for k, on in (("positive", s.positive), ("sign", s.sign)) if on]
            rows.append([s.name, str(s.size), s.group or "-", " and ".join(kinds)])
        lines += _table(rows)
    if getattr(spec, "notes", ()):
        lines += ["", "notes:"] + [f"  - {n}" for n in spec.notes]
    return "\n".join(lines)
