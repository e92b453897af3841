"""Edge features of a whole batch by block copies straight from the parameter tensors.

The generic path (:func:`weightspace.graph.build._features`) flattens every network to ``[B, P]``,
appends a zero and the constants, and gathers each edge slot with one ``index_select``. For large
networks that is three full passes over the weights plus the output, and most of it is avoidable:
the edges of a conv or linear layer are enumerated in the weight's own memory order, so edge ``m`` of
a run takes the ``k`` consecutive weights starting at ``start + (m - m0) * step``. A
:class:`CopyPlan` finds those runs once per spec (vectorized over edges) and builds the features
with one strided copy per run from each parameter tensor; edges outside any run (constants, identity
edges, scattered slots), the node features and ``extra`` are gathered from a small extended vector
holding only the parameters they use. The result is identical to the generic path (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_geometric.utils import cumsum

from ..space import WeightSpace
from ..spec.cache import cached
from ..spec.spec import WeightSpaceSpec
from .plan import GraphPlan, graph_plan

MIN_RUN = 8          # shorter runs are gathered: a copy per run costs more than a gather of a few edges


@dataclass
class CopyRun:
    """Edges ``[m0, m0 + count)`` read ``k`` consecutive entries of parameter ``name`` (flattened per
    network) starting at ``offset + i * step`` for the ``i``-th edge; their other slots are zero."""

    m0: int
    count: int
    k: int
    name: str
    offset: int
    step: int


@dataclass
class CopyPlan:
    runs: list[CopyRun]
    gather_edges: torch.Tensor    # [G] edges built by gathering
    gather_src: torch.Tensor      # [G, Fe] columns of the small extended vector
    x_src: torch.Tensor           # [N * Fn] same for node slots
    extra_src: torch.Tensor       # [K] same for ``extra``
    small_names: tuple[str, ...]  # parameters that make up the small vector (then a zero, the constants)


def copy_plan(spec: WeightSpaceSpec) -> CopyPlan:
    """The copy plan of a spec's parameter graph (built once per spec, like the graph plan)."""
    return cached(spec, "graph_copy_plan", lambda: _build(graph_plan(spec), spec))


def can_copy(space: WeightSpace) -> bool:
    """Whether :func:`features_by_copy` applies: two or more networks (for one, the single gather of
    the generic path is cheaper) whose weights share one dtype on the CPU."""
    names = space.spec.weight_names
    return space.batch_size > 1 and bool(names) and len({space[name].dtype for name in names}) == 1 \
        and all(space[name].device.type == "cpu" for name in names)


def _build(plan: GraphPlan, spec: WeightSpaceSpec) -> CopyPlan:
    names = list(spec.weight_names)
    sizes = torch.tensor([spec[n].numel for n in names], dtype=torch.long)
    starts = cumsum(sizes)[:-1]                                   # first flat column of each parameter
    P, M, fe = plan.num_weights, plan.num_edges, plan.edge_dim
    E = plan.e_src.view(M, fe).long()                              # the plan stores int32 where it fits
    col0 = E[:, 0].contiguous()
    # k: leading slots holding consecutive weight columns; the rest must be the zero column P
    consecutive = (E == col0.unsqueeze(1) + torch.arange(fe)) & (E < P)
    k = consecutive.long().cumprod(1).sum(1)                       # [M]
    tail_zero = (E == P) | (torch.arange(fe) < k.unsqueeze(1))
    pid = torch.searchsorted(starts, col0, right=True) - 1
    pid_last = torch.searchsorted(starts, col0 + (k - 1).clamp_min(0), right=True) - 1
    regular = (k > 0) & tail_zero.all(1) & (pid == pid_last)
    # runs: same k and parameter, constant step between consecutive edges
    step = torch.zeros(M, dtype=torch.long)
    step[1:] = col0[1:] - col0[:-1]
    link = torch.zeros(M, dtype=torch.bool)                        # edge m continues the run of m - 1
    if M > 1:
        link[1:] = regular[1:] & regular[:-1] & (k[1:] == k[:-1]) & (pid[1:] == pid[:-1]) & (step[1:] >= k[1:])
        same_step = torch.zeros(M, dtype=torch.bool)
        same_step[2:] = step[2:] == step[1:-1]
        # the second edge of a run sets the step; later edges must repeat it
        second = link & ~torch.cat([torch.zeros(1, dtype=torch.bool), link[:-1]])
        link &= second | same_step
    run_start = (~link).nonzero().flatten()
    run_len = torch.diff(run_start, append=torch.tensor([M]))
    keep = regular[run_start] & (run_len >= MIN_RUN)
    run_start, run_len = run_start[keep], run_len[keep]
    covered = torch.zeros(M + 1, dtype=torch.long)                  # +1 at a run's start, -1 past its end
    covered.index_add_(0, run_start, torch.ones_like(run_start))
    covered.index_add_(0, run_start + run_len, -torch.ones_like(run_start))
    covered = covered.cumsum(0)[:M] > 0
    runs = [CopyRun(a, n, int(k[a]), names[int(pid[a])], int(col0[a] - starts[pid[a]]), int(step[a + 1]))
            for a, n in zip(run_start.tolist(), run_len.tolist())]
    gather_edges = (~covered).nonzero().flatten()
    # the small vector: parameters read by gathered edges, nodes and extra
    used_cols = torch.cat([E[gather_edges].flatten(), plan.x_src, plan.extra_cols])
    used_cols = used_cols[used_cols < P]
    used_pid = torch.unique(torch.searchsorted(starts, used_cols, right=True) - 1)
    small_names = tuple(names[i] for i in used_pid.tolist())
    remap = torch.full((P + 1 + plan.constants.numel(),), -1, dtype=torch.long)
    pos = 0
    for i in used_pid.tolist():
        remap[int(starts[i]):int(starts[i] + sizes[i])] = torch.arange(pos, pos + int(sizes[i]))
        pos += int(sizes[i])
    remap[P:] = torch.arange(pos, pos + 1 + plan.constants.numel())
    return CopyPlan(runs, gather_edges, remap[E[gather_edges]],
                    remap[plan.x_src], remap[plan.extra_cols], small_names)


def features_by_copy(plan: GraphPlan, space: WeightSpace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Node features ``[B, N, Fn]``, edge features ``[B, M, Fe]`` and extra ``[B, K]`` of a one-spec
    batch; equal to :func:`weightspace.graph.build._features` of ``space.flatten()``."""
    cp = copy_plan(space.spec)
    b = space.batch_size
    t = space.tensors
    dtype = t[space.spec.weight_names[0]].dtype
    used = [t[n].reshape(b, -1) for n in cp.small_names]
    small = plan.extend(torch.cat(used, dim=1) if used else torch.zeros(b, 0, dtype=dtype))
    x = small.index_select(1, cp.x_src).view(b, plan.num_nodes, plan.node_dim)
    e = torch.empty(b, plan.num_edges, plan.edge_dim, dtype=dtype)
    for r in cp.runs:
        src = t[r.name].reshape(b, -1)
        if src.stride(1) != 1:
            src = src.contiguous()
        block = e[:, r.m0:r.m0 + r.count]
        block[:, :, :r.k] = src.as_strided((b, r.count, r.k), (src.stride(0), r.step, 1),
                                           src.storage_offset() + r.offset)
        if r.k < plan.edge_dim:
            block[:, :, r.k:] = 0
    if cp.gather_edges.numel():
        g = small.index_select(1, cp.gather_src.flatten()).view(b, -1, plan.edge_dim)
        e[:, cp.gather_edges] = g
    return x, e, small[:, cp.extra_src]
