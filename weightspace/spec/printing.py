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
            parts.append(s.group + (f"x{s.inner}" if s.inner > 1 else ""))
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
        scal = {}
        for s in spec.scalings:
            if s.group is not None:
                kinds = [k for k, on in (("positive scaling", s.positive), ("sign flip", s.sign)) if on]
                scal.setdefault(s.group, set()).update(kinds)
        rows = [["group", "size", "activation", "symmetry"]]
        for g in spec.groups:
            sym = ["permutation"]
            if g.heads:
                sym = [f"heads of {g.heads[0]} (blocks of {g.heads[1]}), permuted within"]
            sym += sorted(scal.get(g.name, ()))
            rows.append([g.name, str(g.size), g.activation or "-", ", ".join(sym)])
        lines += _table(rows)
    return "\n".join(lines)
