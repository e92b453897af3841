"""Indexing: integer selection, slices, ``getitem`` / ``select`` / ``narrow`` and the splits
(``split``, ``chunk``, ``unbind`` ...). Selecting one feature pins it; every step-th feature pins the
order inside blocks of ``step``; a contiguous slice of a feature axis is a stretch of its space.

The stretch splits the axis's group at its two ends as soon as it is sliced, whatever comes next:
every later use of the slice (a sum or max over it, broadcasting it, squeezing it, feeding it to a
layer) sees exactly the neurons inside it, so a permutation may mix neurons inside the stretch or
outside it but never across its ends. Splitting lazily, when a later rule happens to resolve the
stretch, missed the uses that drop the label (``h[:, 2:5].sum(1)``, ``h[:, 3:4]`` broadcast or
squeezed) and gave specs under which a permutation changed the outputs. A size-1 slice is thus
pinned; a slice of the whole axis changes nothing.
"""
from __future__ import annotations

import torch

from .. import structure as S
from ..context import ATensor, Feat, InputDim, RuleContext, Uniform, rule
from .reshape import still_raw
from .util import arg, norm_dim


def _expand_index(idx, ndim: int) -> list:
    idx = list(idx) if isinstance(idx, tuple) else [idx]
    used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out = []
    for i in idx:
        if i is Ellipsis:
            out.extend([slice(None)] * (ndim - used))
        else:
            out.append(i)
    used_now = sum(1 for i in out if i is not None)
    out.extend([slice(None)] * (ndim - used_now))
    return out


class _Indexer:
    """Applies integer selections and slices to one tensor's labels."""

    def __init__(self, ctx: RuleContext, x: ATensor):
        self.ctx, self.x = ctx, x
        self.dims = list(x.dims)
        self.held = x.held
        self.pinned = dict(x.meta.get("pinned", {}))
        self.keep = [True] * len(self.dims)

    def select(self, d: int, k: int) -> None:
        ctx, lab = self.ctx, self.dims[d]
        self.keep[d] = False
        if not isinstance(lab, Feat):
            return
        if self._within_heads(d):
            return
        if lab.path:
            step, a, b = lab.path[-1]
            if step != "o" or len(lab.path) != 1 or lab.inner != 1 or lab.outer != 1:
                ctx.fail("selecting inside a head or a nested head split")
            ctx.guard(S.fibre, lab.space.var_at(lab.start, lab.length), k, b)
            start = lab.start + k * b
            for e, other in enumerate(self.dims):
                if isinstance(other, Feat) and other.space is lab.space and other.start == lab.start and \
                        other.length == lab.length and other.path[:1] == (("i", a, b),):
                    self.dims[e] = Feat(lab.space, start, b, other.path[1:], other.inner, other.outer)
            if self.held is not None and self.held.space is lab.space:
                self.held = Feat(lab.space, start, b)
            return
        entry = lab.start + (k // lab.inner) % lab.core
        if lab.space.kind == "param" and self.x.param is not None:
            self.pinned[lab.space.axis] = entry
        ctx.guard(lambda: S.fix(lab.space.var_at(entry, 1)))
        if self.held is not None and self.held.space is lab.space:
            self.held = Feat(lab.space, entry, 1)

    def _within_heads(self, d: int) -> bool:
        """Part of the within-head axis (the same entries of every head: rotary embeddings rotate
        the two halves of each head, GPT-NeoX rotates only a leading part). The op then treats each
        within-head position differently, so the within-head order is pinned (for every head alike);
        whole heads still move. The part's positions carry no symmetry (label None: whatever it meets
        is pinned); its values are still the site's (rearranged inside each head, as a rotation
        recombines them), so it stays held, and the site's rescalings break (the halves are mixed)."""
        lab = self.dims[d]
        if not (isinstance(lab, Feat) and lab.path and lab.path[-1][0] == "i" and lab.inner == lab.outer == 1):
            return False
        self.ctx.pin(lab, "a slice of the within-head features (rotary embeddings rotate parts of each head) "
                     "pins the within-head order; whole heads still move")
        self.dims[d] = None
        if self.held is not None and self.held.space is lab.space:
            self.ctx.break_diag(self.held)
        return True

    def slice(self, d: int, sl: slice) -> None:
        ctx, lab = self.ctx, self.dims[d]
        size = self.x.shape[d]
        start, stop, step = sl.indices(size)
        n = len(range(start, stop, step))
        if (start, stop, step) == (0, size, 1):
            return
        if not isinstance(lab, Feat):
            self.dims[d] = (Uniform(n) if isinstance(lab, Uniform) else
                            InputDim(lab.key + ("slice", start, stop, step), n) if isinstance(lab, InputDim) else None)
            return
        if self._within_heads(d):
            return
        if not lab.plain:
            ctx.fail("slicing a split or flattened feature axis")
        if step == 1:
            if n:  # the group splits at the stretch's ends (module docstring)
                ctx.guard(lab.space.var_at, lab.start + start, n)
            self.dims[d] = Feat(lab.space, lab.start + start, n)
        elif start < step and lab.length % step == 0 and n == lab.length // step:
            # every step-th feature: blocks of `step` whose within-block order is pinned
            w = ctx.guard(S.split, lab.space.var_at(lab.start, lab.length), lab.length // step, step)
            if w.state == "wreath":
                ctx.guard(lambda: S.fix(S.make_shared(w)))
            self.dims[d] = Feat(lab.space, lab.start, lab.length, (("o", lab.length // step, step),))
            if self.held is not None and self.held.space is lab.space:
                self.held = None  # the values are a strided subset: no longer one contiguous stretch
            return
        else:
            ctx.fail("a strided slice of hidden features")
        if self.held is not None and self.held.space is lab.space:
            self.held = Feat(lab.space, lab.start + start, n)

    def result(self, value: torch.Tensor, extra: list | None = None) -> ATensor:
        dims = extra if extra is not None else [lab for lab, k in zip(self.dims, self.keep) if k]
        x = self.x
        param = still_raw(x, dims)
        t = ATensor(value, dims, held=self.held, param=param, attn=x.attn)
        if param is not None and self.pinned:
            t.meta["pinned"] = self.pinned
        return t


@rule("getitem")
def _getitem(ctx: RuleContext, x, idx):
    if isinstance(x, (list, tuple)):
        return x[idx]
    if not isinstance(x, ATensor):
        return ctx.out
    items = _expand_index(idx, x.value.dim())
    ix = _Indexer(ctx, x)
    dims_out: list = []
    d = 0
    advanced = False
    for it in items:
        if it is None:
            dims_out.append(("new",))
            continue
        if isinstance(it, ATensor) or isinstance(it, torch.Tensor) or isinstance(it, (list,)):
            advanced = True
            lab = x.dims[d]
            if isinstance(lab, Feat) and lab.space.kind == "param" and x.held is None:
                # rows of a parameter gathered by an index tensor (a relative position bias table):
                # the rows are looked up by position, so that axis is pinned; its other axes stay
                ctx.fix(lab)
            elif isinstance(lab, Feat):
                ctx.fail("indexing hidden features with a tensor")
            ix.keep[d] = False
            dims_out.append(("adv",))
            d += 1
            continue
        if isinstance(it, bool):
            ctx.fail("boolean scalar index")
        if isinstance(it, int):
            ix.select(d, it if it >= 0 else it + x.shape[d])
        else:
            ix.slice(d, it)
            dims_out.append(("dim", d))
        d += 1
    if advanced:
        # numpy rule: adjacent advanced indices put their result dims in place, others in front
        adv = [i for i, e in enumerate(dims_out) if e[0] == "adv"]
        n_adv = ctx.out.dim() - sum(1 for e in dims_out if e[0] != "adv")
        adjacent = adv == list(range(adv[0], adv[-1] + 1))
        labels: list = [] if adjacent else [None] * n_adv
        for i, e in enumerate(dims_out):
            if e[0] == "adv":
                if adjacent and i == adv[0]:
                    labels.extend([None] * n_adv)
            else:
                labels.append(None if e[0] == "new" else ix.dims[e[1]])
        return ix.result(ctx.out, labels)
    labels = [None if e[0] == "new" else ix.dims[e[1]] for e in dims_out]
    return ix.result(ctx.out, labels)


@rule("select")
def _select(ctx: RuleContext, x, dim, index):
    if not isinstance(x, ATensor):
        return ctx.out
    d = norm_dim(dim, x.value.dim())
    ix = _Indexer(ctx, x)
    ix.select(d, index if index >= 0 else index + x.shape[d])
    return ix.result(ctx.out)


@rule("narrow")
def _narrow(ctx: RuleContext, x, dim, start, length):
    if not isinstance(x, ATensor):
        return ctx.out
    d = norm_dim(dim, x.value.dim())
    ix = _Indexer(ctx, x)
    ix.slice(d, slice(start, start + length))
    return ix.result(ctx.out)


@rule("split", "chunk", "tensor_split", "split_with_sizes", "unbind", "hsplit", "vsplit", "dsplit")
def _split(ctx: RuleContext, x, *args, **kwargs):
    if not isinstance(x, ATensor):
        return ctx.out
    n = x.value.dim()
    name = ctx.opname.rstrip("_")
    if name == "unbind":
        d = norm_dim(arg(args, kwargs, 0, "dim", 0), n)
        out = []
        for k, v in enumerate(ctx.out):
            ix = _Indexer(ctx, x)
            ix.select(d, k)
            out.append(ix.result(v))
        return tuple(out)
    dim_default = {"hsplit": 1 if n > 1 else 0, "vsplit": 0, "dsplit": 2}.get(name, 0)
    d = norm_dim(kwargs.get("dim", args[1] if len(args) > 1 else dim_default), n)
    out, offset = [], 0
    for v in ctx.out:
        m = v.shape[d]
        ix = _Indexer(ctx, x)
        ix.slice(d, slice(offset, offset + m))
        out.append(ix.result(v))
        offset += m
    return tuple(out)
