"""Integer sequences stored by their sparse second differences.

The index tensors of a parameter graph (edge sources and targets, weight columns, edge ids) are
piecewise arithmetic: a linear layer's edges are ``(in, out)`` for ``out`` in a range and ``in`` in a
range, so the sources are runs ``b, b + 1, ...`` and the targets runs of one value. The second
difference of such a sequence is zero except at the boundaries of the runs, so a few numbers per
output neuron describe ``out x in`` edges. Decision: the graph plan keeps these tensors in this form
(:class:`IntSeq`) when that is smaller, and writes them into the graph's own buffer with two in-place
cumulative sums; the dense form is kept when it is smaller (irregular orders). A network with
10^8 edges then carries no per-edge index copy in its cached plan, and building a plan never holds
a full-size list of int64 records.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SMALL = 1 << 10                  # shorter sequences stay dense
CHUNK = 1 << 18                  # encode / decode in pieces: temporaries of 2 MB, reused piece after piece


@dataclass(frozen=True, eq=False)
class IntSeq:
    """``n`` integers: their sparse second differences (``where``, ``value``), or ``dense`` values."""

    n: int
    where: torch.Tensor            # [K] int64 positions of the nonzero second differences
    value: torch.Tensor            # [K] int64 their values
    dense: torch.Tensor | None = None

    @staticmethod
    def of(t: torch.Tensor, store: "Slab | None" = None) -> "IntSeq":
        """Encode a 1-D integer tensor (the sparse form when it takes fewer bytes than ``t``); the
        result's tensors are carved from ``store`` when given."""
        keep = store.put if store is not None else (lambda x: x)
        t = t.reshape(-1)
        n = t.numel()
        if n <= SMALL:                                   # not worth encoding
            return IntSeq(n, _EMPTY, _EMPTY, keep(t.clone()))
        where, value, budget = [], [], t.numel() * t.element_size() // 16    # 16 bytes per nonzero
        found = 0
        for s in range(0, n, CHUNK):
            lo = max(s - 2, 0)
            piece = t[lo:s + CHUNK].long()
            if s == 0:
                piece = torch.cat([piece.new_zeros(2), piece])
            d2 = piece[2:] - piece[1:-1] * 2 + piece[:-2]          # d2[i] belongs to position s + i
            nz = d2.nonzero().flatten()
            found += nz.numel()
            if found > budget:
                return IntSeq(n, _EMPTY, _EMPTY, keep(t.clone()))
            where.append(nz + s)
            value.append(d2.index_select(0, nz))
        if not where:
            return IntSeq(0, _EMPTY, _EMPTY)
        return IntSeq(n, keep(torch.cat(where)), keep(torch.cat(value)))

    @property
    def nbytes(self) -> int:
        return self.dense.nbytes if self.dense is not None else self.where.nbytes + self.value.nbytes

    def write(self, out: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Values ``start .. start + len(out)`` into ``out`` (1-D, any integer dtype that holds them; a
        view is fine). A window starts from the running first difference and value before it, so long
        sequences decode in pieces of bounded size."""
        k = out.numel()
        if self.dense is not None:
            return out.copy_(self.dense[start:start + k])
        out.zero_()
        if k == 0:
            return out
        inside = (self.where >= start) & (self.where < start + k)
        out.index_put_((self.where[inside] - start,), self.value[inside].to(out.dtype))
        if start:
            before = self.where < start
            w, v = self.where[before], self.value[before]
            slope = int(v.sum())                             # first difference at start - 1
            level = int(((start - w) * v).sum())             # value at start - 1
            out[0] += slope
            out.cumsum_(0)
            out[0] += level
            out.cumsum_(0)
            return out
        out.cumsum_(0)
        out.cumsum_(0)                   # exact in any width that holds the result (wrap-around arithmetic)
        return out

    def windows(self, size: int | None = None):
        """``(start, values [<= size] int64)`` pieces covering the sequence (``CHUNK`` entries each)."""
        size = size or CHUNK
        for s in range(0, self.n, size):
            yield s, self.write(torch.empty(min(size, self.n - s), dtype=torch.long), s)

    def tensor(self, dtype: torch.dtype = torch.long) -> torch.Tensor:
        return self.write(torch.empty(self.n, dtype=dtype))


_EMPTY = torch.zeros(0, dtype=torch.long)


class Slab:
    """Long-lived small tensors of one plan build, copied into blocks of ``block`` bytes.

    Why: a plan build frees far more short-lived memory (each op's index tensors) than it keeps. Kept
    tensors allocated one by one sit between the freed ones on the C heap, which then cannot return
    that memory (gigabytes of resident but free memory on a ViT-B/16). Blocks this size are mapped
    separately by the allocator, and their untouched tail costs no resident memory."""

    def __init__(self, block: int = 64 << 20):
        self.block, self.open = block, {}                    # dtype -> (block, used entries)

    def put(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1)
        n, size = t.numel(), self.block // t.element_size()
        if n < 64 or n > size // 8:          # tiny ones cost nothing; large ones are mapped on their own anyway
            return t
        buf, used = self.open.get(t.dtype, (None, size))
        if used + n > size:
            buf, used = torch.empty(size, dtype=t.dtype), 0
        out = buf[used:used + n]
        out.copy_(t)
        self.open[t.dtype] = (buf, used + n)
        return out
