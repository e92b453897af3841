"""Chunked, recomputed edge MLPs (``weightspace.nn.graph.fused``): values and gradients equal the plain
composition (gather, MLP, scatter aggregation / LayerNorm) on graphs with irregular in-degrees, empty
receivers and several chunks; ``gradcheck`` in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import scatter

from weightspace.nn.graph import NGGNN
from weightspace.nn.graph.fused import ChunkPlan, EdgeUpdate, MessageAggregate, edge_chunks

H = 4


def _graph(seed: int, n: int = 13, m: int = 40):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.stack([torch.randint(0, n, (m,), generator=g), torch.randint(0, n - 3, (m,), generator=g)])
    a, b = (torch.randn(n, H, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    e = torch.randn(m, H, generator=g, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
              for s in ((H, H), (H,), (H, H), (H,), (H,), (H,))]
    return edge_index, a, b, e, params


def _messages(a, b, e, params, recv, send):
    w1, b1, w2, b2 = params[:4]
    return F.linear(F.silu(F.linear(e, w1, b1) + a[recv] + b[send]), w2, b2)


def _reference_aggregate(edge_index, n, a, b, e, params, aggregators, reverse):
    send, recv = edge_index.flip(0) if reverse else edge_index
    msg = _messages(a, b, e, params, recv, send)
    out = []
    for agg in aggregators:
        if agg == "std":
            mean = scatter(msg, recv, 0, dim_size=n, reduce="mean")
            var = scatter((msg - mean[recv]).square(), recv, 0, dim_size=n, reduce="mean")
            has = (torch.bincount(recv, minlength=n) > 0).unsqueeze(-1)
            out.append(torch.where(has, (var + 1e-5).sqrt(), torch.zeros((), dtype=msg.dtype)))
        else:
            out.append(scatter(msg, recv, 0, dim_size=n, reduce=agg))
    return torch.cat(out, -1)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_message_aggregate_matches_scatter(reverse, chunk):
    edge_index, a, b, e, params = _graph(chunk + reverse)
    n = a.shape[0]
    aggregators = ("mean", "min", "max", "std", "sum")
    plan = ChunkPlan.nodes(edge_index, n, chunk, reverse=reverse)
    assert len(plan.chunks) > (1 if chunk < 40 else 0)
    (out,) = edge_chunks(e, (plan, MessageAggregate(aggregators), H * len(aggregators), a, b, params[:4]))
    ref = _reference_aggregate(edge_index, n, a, b, e, params, aggregators, reverse)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert out.abs().sum() > 0
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    inputs = [a, b, e, *params[:4]]
    got = torch.autograd.grad((out * w).sum(), inputs)
    want = torch.autograd.grad((ref * w).sum(), inputs)
    for g1, g2 in zip(got, want):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [3, 1000])
def test_edge_update_matches_layer_norm(chunk):
    edge_index, a, b, e, params = _graph(7 + chunk)
    plan = ChunkPlan.edges(edge_index, chunk)
    (out,) = edge_chunks(e, (plan, EdgeUpdate(1e-5), H, a, b, params))
    send, recv = edge_index
    ref = F.layer_norm(e + _messages(a, b, e, params, recv, send), (H,), params[4], params[5], 1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(2))
    inputs = [a, b, e, *params]
    for g1, g2 in zip(torch.autograd.grad((out * w).sum(), inputs), torch.autograd.grad((ref * w).sum(), inputs)):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)


def test_gradcheck_both_kernels_and_passes_sharing_edges():
    """Both kernels, and two passes over the same edge states (one gradient for ``e``)."""
    edge_index, a, b, e, params = _graph(3, n=9, m=20)
    plan = ChunkPlan.nodes(edge_index, 9, 4, reverse=True)
    agg = MessageAggregate(("mean", "max", "min", "std", "var"))
    assert torch.autograd.gradcheck(lambda e, a, b, *p: edge_chunks(e, (plan, agg, 5 * H, a, b, p)),
                                    (e, a, b, *params[:4]))
    edges = ChunkPlan.edges(edge_index, 6)
    assert torch.autograd.gradcheck(lambda e, a, b, *p: edge_chunks(e, (edges, EdgeUpdate(1e-5), H, a, b, p)),
                                    (e, a, b, *params))
    fwd = ChunkPlan.nodes(edge_index, 9, 5)
    two = MessageAggregate(("mean", "max"))
    both = lambda e, a, b, *p: edge_chunks(e, (fwd, two, 2 * H, a, b, p), (plan, agg, 5 * H, b, a, p))  # noqa: E731
    assert torch.autograd.gradcheck(both, (e, a, b, *params[:4]))


def test_max_ties_share_the_gradient():
    """Two equal messages at a receiver's max: each gets half (as ``amax``); the kernel recomputes the
    messages in the backward pass, so the tie is found again exactly."""
    edge_index = torch.tensor([[0, 1], [2, 2]])
    a = torch.zeros(3, H, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, H, dtype=torch.float64, requires_grad=True)
    e = torch.ones(2, H, dtype=torch.float64, requires_grad=True)
    params = [torch.eye(H, dtype=torch.float64, requires_grad=True), torch.zeros(H, dtype=torch.float64),
              torch.eye(H, dtype=torch.float64, requires_grad=True), torch.zeros(H, dtype=torch.float64)]
    (out,) = edge_chunks(e, (ChunkPlan.nodes(edge_index, 3, 8), MessageAggregate(("max",)), H, a, b, params))
    (g,) = torch.autograd.grad(out[2].sum(), [e])
    torch.testing.assert_close(g[0], g[1])
    assert g.abs().sum() > 0


def test_unknown_aggregator_is_refused():
    with pytest.raises(ValueError, match="unknown aggregator 'median'"):
        NGGNN(hidden=8, layers=1, aggregators=("mean", "median"))


def test_chunks_are_small_on_cpu_and_large_on_accelerators():
    """CPU chunks keep temporaries near CHUNK_BYTES per thread (cache-resident, no page faults); on an
    accelerator (a caching allocator) chunks are DEVICE_CHUNK_BYTES, a few kernel launches per layer."""
    from weightspace.nn.graph.fused import CHUNK_BYTES, DEVICE_CHUNK_BYTES, chunk_size

    cpu = chunk_size(32, 4, "cpu")
    assert cpu * 32 * 4 <= CHUNK_BYTES * torch.get_num_threads()
    assert chunk_size(32, 4, "cuda") * 32 * 4 == DEVICE_CHUNK_BYTES > cpu * 32 * 4
    assert chunk_size(32, 4) == cpu
