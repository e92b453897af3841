"""Helpers of the graph plan builder (:mod:`.plan`): packing the per-op records, narrow dtypes,
the placement arithmetic of split edges and the first placement of each weight.

Record fields are tensors, ints shared by a whole record, or :class:`~.intseq.IntSeq` (large index
tensors, packed right after their op); ``unpack`` gives any of them back as a tensor.
"""
from __future__ import annotations

import torch

from .intseq import IntSeq, Slab


def narrow(t: torch.Tensor) -> torch.Tensor:
    """An integer tensor in the narrowest of int8, int16, int32, int64 that holds its values
    (categorical attributes of graphs: edge types, chunk numbers, depths). Not uint8: torch reads a
    uint8 index tensor as a mask, silently; int8 / int16 indices fail loudly. Arithmetic that may leave
    the range, and indexing, must widen first (``t.long()``); embeddings take int32 / int64 (``t.int()``)."""
    if t.numel() == 0:
        return t.to(torch.int8)
    return t.to(narrowest(int(t.min()), int(t.max())))


def narrowest(lo: int, hi: int) -> torch.dtype:
    for dtype in (torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return torch.long


def pack(t, least: int = 4096, store: Slab | None = None):
    """A recorded index tensor as an :class:`IntSeq` (``least`` entries or more) or int32, kept in
    ``store`` when given (see :class:`~.intseq.Slab`)."""
    if torch.is_tensor(t) and t.numel() >= least:
        return IntSeq.of(t, store)
    return as_int32(t, store)


def unpack(f):
    """A record field back as a tensor (int64 when it was packed)."""
    return f.tensor() if isinstance(f, IntSeq) else f


def as_int32(t, store: Slab | None = None):
    """A recorded index tensor as int32 when its values fit (other fields pass through)."""
    if not torch.is_tensor(t) or t.dtype != torch.long or t.numel() == 0:
        return t
    if int(t.max()) < 2**31 and int(t.min()) >= -2**31:
        t = t.to(torch.int32)
    return store.put(t) if store is not None else t


def fill(records: list[tuple], i: int, total: int, dtype: torch.dtype) -> torch.Tensor:
    """Field ``i`` of the edge records (an int for the whole record, or a tensor) as one ``[total]``
    tensor, written record by record (no list of full-size parts)."""
    out = torch.empty(total, dtype=dtype)
    a = 0
    for r in records:
        k = r[0].n if isinstance(r[0], IntSeq) else r[0].numel()
        out[a:a + k] = unpack(r[i])
        a += k
    return out


def chunk_owner(first: torch.Tensor, stop: int) -> torch.Tensor:
    """For each chunk of a record's edges (edge ``i``'s chunks start at ``first[i]``, the last end at
    ``stop``), the index of its edge within the record."""
    return torch.repeat_interleave(torch.arange(first.numel()), torch.diff(first, append=first.new_tensor([stop])))


def edge_pos(edge: torch.Tensor, slot, first: torch.Tensor | None, fe: int) -> torch.Tensor:
    """Flat positions in ``[M' * Fe]`` of (edge, slot) placements; with split edges (``first``: each
    edge's first chunk) slot ``s`` lies in chunk ``s // Fe`` at ``s % Fe``."""
    if first is None:
        return edge.long() * fe + slot
    chunk = first.index_select(0, edge).long()
    if fe == 1:
        return chunk.add_(slot)
    if not torch.is_tensor(slot):
        return chunk.add_(slot // fe).mul_(fe).add_(slot % fe)
    return chunk.add_(torch.div(slot, fe, rounding_mode="floor")).mul_(fe).add_(slot.remainder(fe))


def first_placements(cols: torch.Tensor, pos: torch.Tensor, placed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The placements of one record that are the first of their column (records come in order, so
    ``placed`` says which columns earlier records placed); marks them placed. Linear time. Returns
    the given tensors themselves when every placement is kept."""
    if cols.numel() == 0:
        return cols, pos
    keep = placed.index_select(0, cols).logical_not_()
    if cols.numel() > 1 and not bool((cols[1:] > cols[:-1]).all()):    # a column may repeat within the record
        lo = int(cols.min())
        local = cols - lo                                   # a record reads one parameter: a short range
        count = torch.zeros(int(local.max()) + 1, dtype=torch.int32).index_add_(
            0, local, torch.ones(1, dtype=torch.int32).expand(local.numel()))
        if int(count.max()) > 1:
            del count
            rank = torch.arange(cols.numel())
            first = torch.full((int(local.max()) + 1,), cols.numel(), dtype=torch.long)
            first.scatter_reduce_(0, local.long(), rank, "amin")
            keep &= first.index_select(0, local).eq(rank)
            del rank, first
        del local
    if not bool(keep.all()):
        cols, pos = cols[keep], pos[keep]
    placed[cols] = True
    return cols, pos


def joined(parts: list[torch.Tensor], dtype: torch.dtype = torch.long) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def cat_field(records: list[tuple], i: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Field ``i`` of the recorded tuples, concatenated (empty when nothing was recorded). A field may
    be an int shared by the record's entries (the record's length is its field 0's)."""
    parts = [r[i] if torch.is_tensor(r[i]) else torch.full((r[0].numel(),), r[i], dtype=dtype) for r in records]
    return torch.cat(parts).to(dtype) if parts else torch.zeros(0, dtype=dtype)
