"""Edge MLPs run in chunks of edges and recomputed in the backward pass (:func:`edge_chunks`).

Design decision: on CPU at batch 256 an edge tensor ``[M, H]`` is tens of MB (287k edges x 32 for
SIREN 2-32-32-1), above glibc's largest mmap threshold (32 MB), so every fresh one is mapped from
the OS and page-faulted in: a composed NG-GNN step allocated ~7 GB of fresh pages and spent half its
time in the kernel. Here a per-edge MLP ``W2 silu(W1 e_k + a[i_k] + b[j_k]) + b2`` (on an edge's
state and its two nodes' projections) is evaluated chunk by chunk: ~8k edges per chunk, whose
temporaries (1 MB) come from the heap and stay in cache. Nothing per edge is kept for the backward
pass but the input ``e``: each chunk is recomputed there and differentiated by hand (checkpointing
per chunk, without autograd's bookkeeping or its gradient-accumulation copies), its gradients written
straight into one ``[M, H]`` gradient shared by all passes over the same ``e`` and
``index_add_``-ed into the node projections' ``[N, H]`` gradients. An NG-GNN layer allocates one
``[M, H]`` tensor forward (its new edge states) and two backward, instead of ~40.

Two reductions of the chunk outputs (:class:`ChunkPlan`):

* ``edges``: the output is per edge (``[M, F]``; :class:`EdgeUpdate`, ``LN(e + MLP(h_i, h_j, e))``);
* ``nodes``: the output is per receiver (``[N, F]``; :class:`MessageAggregate`, PNA aggregation of
  messages). Receivers are sorted by in-degree and edges by receiver in that order, and every chunk
  holds whole receivers of one in-degree, so a chunk's node rows depend on its edges only (the
  chunked result equals the whole one) and aggregation is a reduction over the middle dimension of
  a ``[receivers, degree, H]`` block (:func:`block_aggregate`).

The cost is one more forward evaluation of the edge MLPs (in the backward pass); the arithmetic of a
``[8k, 32] @ [32, 32]`` matmul (0.2 ms) is cheaper than faulting in a fresh full-size output was.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

CHUNK_BYTES = 2 ** 20            # ~1 MB per chunk temporary: heap-allocated, cache-resident
DEVICE_CHUNK_BYTES = 2 ** 28     # on GPUs: few, large chunks (the caching allocator makes no page faults)


@dataclass(frozen=True)
class ChunkPlan:
    """Chunks of a graph's edges, computed once per graph and shared by all layers.

    Edge ``k`` of the plan's order reads ``a[recv[k]]``, ``b[send[k]]`` and ``e[order[k]]`` (``order``
    None: the edges' own order). ``chunks``: ``(start, stop, row0, row1, degree)``. For
    ``reduce="edges"`` a chunk's output rows are its edge range (``degree`` None). For
    ``reduce="nodes"`` the receivers are sorted by in-degree (``perm``; ties by index) and the edges
    by receiver in that order, so a chunk holds the edges of receivers ``perm[row0:row1]``, all of
    in-degree ``degree``, contiguously: ``[rows * degree, H]`` is a ``[rows, degree, H]`` block that
    reductions over dim 1 aggregate (vectorized; ``torch.segment_reduce`` is ~40x slower on CPU)."""

    send: torch.Tensor
    recv: torch.Tensor
    order: torch.Tensor | None
    perm: torch.Tensor | None
    lengths: torch.Tensor | None
    chunks: tuple[tuple[int, int, int, int, int | None], ...]
    reduce: str
    rows: int

    @classmethod
    @torch.compiler.disable
    def edges(cls, edge_index: torch.Tensor, chunk: int) -> "ChunkPlan":
        """Per-edge outputs, in the edges' order: ``recv = edge_index[1]``, ``send = edge_index[0]``."""
        m = edge_index.shape[1]
        bounds = list(range(0, m, max(chunk, 1))) + [m]
        chunks = tuple((s, t, s, t, None) for s, t in zip(bounds[:-1], bounds[1:]))
        return cls(edge_index[0], edge_index[1], None, None, None, chunks, "edges", m)

    @classmethod
    @torch.compiler.disable
    def nodes(cls, edge_index: torch.Tensor, num_nodes: int, chunk: int, reverse: bool = False) -> "ChunkPlan":
        """Per-receiver outputs: along the edges (receiver ``edge_index[1]``) or against them."""
        send, recv = (edge_index[1], edge_index[0]) if reverse else (edge_index[0], edge_index[1])
        lengths = torch.bincount(recv, minlength=num_nodes)
        perm = torch.argsort(lengths, stable=True)
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(num_nodes, device=perm.device)
        order = torch.argsort(rank[recv], stable=True)
        send, recv = send[order], recv[order]
        degrees, counts = torch.unique_consecutive(lengths[perm], return_counts=True)
        chunks, row, start = [], 0, 0
        for d, n in zip(degrees.tolist(), counts.tolist()):
            step = n if d == 0 else max(1, chunk // d)
            for r in range(row, row + n, step):
                r1 = min(r + step, row + n)
                chunks.append((start, start + (r1 - r) * d, r, r1, d))
                start += (r1 - r) * d
            row += n
        if bool((order == torch.arange(order.numel(), device=order.device)).all()):
            order = None
        return cls(send, recv, order, perm, lengths, tuple(chunks), "nodes", num_nodes)

    def inputs(self, chunk, a: torch.Tensor, b: torch.Tensor, e: torch.Tensor):
        s, t = chunk[0], chunk[1]
        e_c = e[s:t] if self.order is None else e.index_select(0, self.order[s:t])
        return e_c, a.index_select(0, self.recv[s:t]), b.index_select(0, self.send[s:t])


def chunk_size(hidden: int, itemsize: int, device: torch.device | str | None = None) -> int:
    """Edges per chunk. On CPU one ``[chunk, hidden]`` temporary is about ``CHUNK_BYTES`` per intra-op
    thread (with more threads, fewer and larger parallel ops: each one is a synchronization). On an
    accelerator, where allocation is a cached pool and every chunk is a few kernel launches, chunks
    are ``DEVICE_CHUNK_BYTES``: the recomputation still keeps per-edge tensors out of the backward."""
    if device is not None and torch.device(device).type != "cpu":
        return max(256, DEVICE_CHUNK_BYTES // max(hidden * itemsize, 1))
    return max(256, CHUNK_BYTES * torch.get_num_threads() // max(hidden * itemsize, 1))


def _pair(e, a, b, w1, w2, b2):
    """``W2 silu(W1 e + a + b) + b2`` of a chunk (``a`` holds ``W1``'s bias, and is overwritten):
    ``(z, s, m)`` (pre-activation, activation, output)."""
    z = a.addmm_(e, w1.t()).add_(b)
    s = F.silu(z)
    return z, s, torch.addmm(b2, s, w2.t())


def _pair_backward(g_m, e, z, s, w1, w2, grads):
    """Gradients of :func:`_pair` from ``g_m``: accumulates the weight gradients into ``grads`` (``[gw1,
    gb1, gw2, gb2]``; ``gb1`` is left to the caller) and returns ``(g_e, g_z)`` (``g_z`` is the
    gradient of both gathered node terms)."""
    grads[2].addmm_(g_m.t(), s)
    grads[3].add_(g_m.sum(0))
    g_z = torch.ops.aten.silu_backward(g_m.mm(w2), z)
    grads[0].addmm_(g_z.t(), e)
    return g_z.mm(w1), g_z


AGGREGATORS = ("mean", "sum", "min", "max", "std", "var")


def block_aggregate(m: torch.Tensor, degree: int, aggregators: Sequence[str]) -> torch.Tensor:
    """``[R * degree, H]`` messages, receiver-major (each receiver's ``degree`` messages contiguous)
    -> ``[R, A * H]``: each aggregator over each receiver's messages; ``std`` is ``sqrt(var + 1e-5)``
    with the population variance, as PyG's ``StdAggregation``. Reductions over dim 1 of
    ``[R, degree, H]`` (``torch.segment_reduce`` is ~40x slower, ``var_mean`` ~50x, on CPU)."""
    return torch.cat(_block_stats(m.view(-1, degree, m.shape[-1]), aggregators)[0], -1)


def _block_stats(m3: torch.Tensor, aggregators: Sequence[str]):
    stats: dict[str, torch.Tensor] = {}
    degree = m3.shape[1]
    for a in aggregators:
        if a in ("mean", "std", "var") and "mean" not in stats:
            stats["mean"] = m3.sum(1).div_(degree)
            stats["centered"] = m3 - stats["mean"].unsqueeze(1)
            stats["var"] = stats["centered"].square().sum(1).div_(degree)
            stats["std"] = (stats["var"] + 1e-5).sqrt_()
        elif a == "sum":
            stats[a] = m3.sum(1)
        elif a in ("max", "min"):
            stats[a] = m3.amax(1) if a == "max" else m3.amin(1)
    return [stats[a] for a in aggregators], stats


def _block_backward(m3: torch.Tensor, stats: dict, aggregators: Sequence[str], grad: torch.Tensor) -> torch.Tensor:
    """``[R, A * H]`` gradient of :func:`block_aggregate` -> ``[R, degree, H]`` (ties at a min / max
    share its gradient evenly, as ``amax`` / ``amin`` do)."""
    degree = m3.shape[1]
    g = dict(zip(aggregators, grad.chunk(len(aggregators), -1)))
    const = None                                                    # per receiver: mean and sum terms
    if "mean" in g:
        const = g["mean"] / degree
    if "sum" in g:
        const = g["sum"] if const is None else const + g["sum"]
    coef = None                                                     # times (m - mean): std and var terms
    if "std" in g:
        coef = g["std"] / (stats["std"] * degree)
    if "var" in g:
        coef = g["var"] * (2 / degree) if coef is None else coef + g["var"] * (2 / degree)
    if coef is None:
        out = torch.zeros_like(m3) if const is None else const.unsqueeze(1).expand_as(m3).clone()
    else:
        out = stats["centered"] * coef.unsqueeze(1) if const is None else torch.addcmul(
            const.unsqueeze(1), stats["centered"], coef.unsqueeze(1))
    for a in ("max", "min"):
        if a in g:     # (m - max == 0) is m == max for finite floats, and 5x faster than a broadcast ==
            mask = (m3 - stats[a].unsqueeze(1)).eq_(0)
            out.addcmul_(mask, (g[a] / mask.sum(1)).unsqueeze(1))
    return out


class MessageAggregate:
    """Chunk kernel: PNA aggregates of the pair-MLP messages of a block of receivers."""

    def __init__(self, aggregators: Sequence[str]):
        bad = [a for a in aggregators if a not in AGGREGATORS]
        if bad:
            raise ValueError(f"unknown aggregator {bad[0]!r}; choose from {', '.join(AGGREGATORS)}")
        self.aggregators = tuple(aggregators)

    def forward(self, e, a, b, params, degree):
        return block_aggregate(_pair(e, a, b, params[0], params[2], params[3])[2], degree, self.aggregators)

    def backward(self, e, a, b, params, degree, grad, grads):
        z, s, m = _pair(e, a, b, params[0], params[2], params[3])
        m3 = m.view(-1, degree, m.shape[-1])
        g_m = _block_backward(m3, _block_stats(m3, self.aggregators)[1], self.aggregators, grad)
        return _pair_backward(g_m.view_as(m), e, z, s, params[0], params[2], grads)


class EdgeUpdate:
    """Chunk kernel: ``LayerNorm(e + pair MLP)`` per edge."""

    def __init__(self, eps: float):
        self.eps = eps

    def forward(self, e, a, b, params, degree):
        m = _pair(e, a, b, params[0], params[2], params[3])[2]
        return F.layer_norm(m.add_(e), params[4].shape, params[4], params[5], self.eps)

    def backward(self, e, a, b, params, degree, grad, grads):
        z, s, m = _pair(e, a, b, params[0], params[2], params[3])
        x = m.add_(e)
        shape = params[4].shape
        _, mu, rstd = torch.ops.aten.native_layer_norm(x, shape, params[4], params[5], self.eps)
        g_x, g_gamma, g_beta = torch.ops.aten.native_layer_norm_backward(grad, x, shape, mu, rstd, params[4],
                                                                         params[5], [True, True, True])
        grads[4].add_(g_gamma)
        grads[5].add_(g_beta)
        g_e, g_z = _pair_backward(g_x, e, z, s, params[0], params[2], grads)
        return g_e.add_(g_x), g_z


class Pass(NamedTuple):
    """One kernel over one plan's chunks: ``width`` output columns, ``params`` tensors after ``a, b``."""

    plan: ChunkPlan
    kernel: object
    width: int
    params: int


def _run(p: Pass, ab, b, e, params):
    plan, kernel = p.plan, p.kernel
    out = e.new_empty(plan.rows, p.width)
    for c in plan.chunks:
        if plan.perm is None:
            out[c[2]:c[3]] = kernel.forward(*plan.inputs(c, ab, b, e), params, None)
        elif c[4] == 0:
            out.index_fill_(0, plan.perm[c[2]:c[3]], 0)          # receivers without edges
        else:
            out.index_copy_(0, plan.perm[c[2]:c[3]], kernel.forward(*plan.inputs(c, ab, b, e), params, c[4]))
    return out


def _run_backward(p: Pass, ab, b, e, params, grad, g_e, first: bool):
    """Gradients of ``a, b, params`` of one pass; its ``e`` gradient written (``first``) or added into ``g_e``."""
    plan, kernel = p.plan, p.kernel
    g_a, g_b = torch.zeros_like(ab), torch.zeros_like(b)
    g_p = [torch.zeros_like(t) for t in params]
    grad = grad.contiguous()
    for s, t, r0, r1, degree in plan.chunks:
        if s == t:
            continue
        g_out = grad[r0:r1] if plan.perm is None else grad.index_select(0, plan.perm[r0:r1])
        g_ec, g_z = kernel.backward(*plan.inputs((s, t), ab, b, e), params, degree, g_out, g_p)
        if plan.order is None:
            if first:
                g_e[s:t] = g_ec
            else:
                g_e[s:t] += g_ec
        elif first:
            g_e.index_copy_(0, plan.order[s:t], g_ec)
        else:
            g_e.index_add_(0, plan.order[s:t], g_ec)
        g_a.index_add_(0, plan.recv[s:t], g_z)
        g_b.index_add_(0, plan.send[s:t], g_z)
    g_p[1] = g_a.sum(0)                                             # W1's bias meets every edge once
    return [g_a, g_b, *g_p]


class _EdgeChunks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, passes: tuple[Pass, ...], e, *tensors):
        outs, k = [], 0
        for p in passes:
            a, b, *params = tensors[k:k + 2 + p.params]
            outs.append(_run(p, a + params[1], b, e, params))   # W1's bias, folded into a node term
            k += 2 + p.params
        ctx.save_for_backward(e, *tensors)
        ctx.passes = passes
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        e, *tensors = ctx.saved_tensors
        g_e = torch.empty_like(e)                   # every edge is in exactly one chunk of every pass
        out, k = [], 0
        for i, (p, grad) in enumerate(zip(ctx.passes, grads)):
            a, b, *params = tensors[k:k + 2 + p.params]
            out += _run_backward(p, a + params[1], b, e, params, grad, g_e, first=i == 0)
            k += 2 + p.params
        return (None, g_e, *out)


@torch.compiler.disable
def edge_chunks(e: torch.Tensor, *passes: tuple) -> tuple[torch.Tensor, ...]:
    """Chunk kernels (:class:`MessageAggregate`, :class:`EdgeUpdate`) over edge states ``e [M, H]``,
    one output per pass ``(plan, kernel, width, a, b, params)``: the kernel on
    ``(e_k, a[recv_k], b[send_k])`` over the plan's chunks, recomputed in the backward pass, which
    writes one ``[M, H]`` gradient for all passes. ``a, b [N, H]``; ``params``: ``W1, b1, W2, b2``
    of the pair MLP (and the LayerNorm's weight and bias for :class:`EdgeUpdate`). Outputs are
    ``[M, width]`` (``reduce="edges"``) or ``[N, width]`` (``reduce="nodes"``; receivers without
    edges get 0). Never compiled: under ``torch.compile`` the chunk loop runs eagerly (its kernels
    are already a few large ops each)."""
    specs = tuple(Pass(plan, kernel, width, len(params)) for plan, kernel, width, _, _, params in passes)
    tensors = [t for *_, a, b, params in passes for t in (a, b, *params)]
    return _EdgeChunks.apply(specs, e, *tensors)
