"""Graph construction benchmark: 10,000 SIREN INRs (2-32-32-1) and 256 ResNet-20s into one Batch.

References measured in the same run:
* a straightforward per-network loop: for each network, edges per layer from its weight matrix
  (``edge_index`` from the matrix's nonzero pattern, ``edge_attr = W.flatten()``, biases as node
  features) into a ``Data``, then ``Batch.from_data_list`` (the way most papers' code builds graphs);
* for ResNet-20, a per-network loop that walks the dataflow for every network (index arithmetic redone
  per network, as code without a per-spec cache does), and the loop over our own single-network
  ``to_graph(state_dict, spec)`` (cached plan, one network at a time).

For context (not measured here): the issue quotes the neural-graphs repository at 90 s to construct
graphs for 10,000 INRs (it encodes all 67x67 node pairs) and 4.7 s to convert them to PyG batches.

Run: ``python benchmarks/bench_graph.py`` (``--quick`` for a smoke run).
"""
from __future__ import annotations

import argparse
import time

import torch
from _table import print_table
from torch_geometric.data import Batch, Data

import weightspace as ws
from weightspace.graph.build import _features
from weightspace.graph.plan import _Builder
from weightspace.models import SIREN, resnet20


def timed(fn, repeat=1):
    """Best wall time of ``repeat`` calls and the last result. The previous result is freed before
    the clock starts (freeing a 600 MB batch is not part of building the next one)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def loop_mlp_graph(sd: dict, widths: list[int]) -> Data:
    """The plain per-network constructor: one Linear layer at a time."""
    offsets = [0]
    for w in widths:
        offsets.append(offsets[-1] + w)
    src, dst, attr, x = [], [], [], [torch.zeros(widths[0])]
    for i in range(len(widths) - 1):
        w, b = sd[f"layers.{i}.weight"], sd[f"layers.{i}.bias"]
        o, j = torch.meshgrid(torch.arange(w.shape[0]), torch.arange(w.shape[1]), indexing="ij")
        src.append(offsets[i] + j.flatten())
        dst.append(offsets[i + 1] + o.flatten())
        attr.append(w.flatten())
        x.append(b)
    return Data(x=torch.cat(x)[:, None], edge_index=torch.stack([torch.cat(src), torch.cat(dst)]),
                edge_attr=torch.cat(attr)[:, None])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []

    # ---------------------------------------------------------------- 10,000 SIRENs
    n = 1000 if args.quick else 10_000
    spec = ws.WeightSpaceSpec.from_module(SIREN(), torch.rand(4, 2))
    flat = torch.randn(n, spec.num_weights) * 0.1
    space = ws.WeightSpace.unflatten(flat, spec)
    ws.to_graph(space[:2])  # builds and caches the per-spec plan
    t_ours, batch = timed(lambda: ws.to_graph(space), repeat=3)
    t_inv, back = timed(lambda: ws.from_graph(batch, spec), repeat=3)
    assert torch.equal(back.flatten(), space.flatten())
    n_loop = min(n, 2000)
    sds = space[:n_loop].to_state_dicts()
    t_loop, ref = timed(lambda: Batch.from_data_list([loop_mlp_graph(sd, [2, 32, 32, 1]) for sd in sds]))
    assert ref.num_edges == n_loop * 1120 and batch.num_edges == n * 1120
    rate_ours, rate_loop = n / t_ours, n_loop / t_loop
    rows.append((f"{n:,} SIRENs 2-32-32-1 -> one Batch", f"{t_ours:.3f} s", f"{rate_ours:,.0f} nets/s",
                 f"loop {rate_loop:,.0f} nets/s", f"{rate_ours / rate_loop:.0f}x"))
    rows.append((f"  inverse from_graph, {n:,} SIRENs", f"{t_inv:.3f} s", f"{n / t_inv:,.0f} nets/s", "", ""))
    rows.append(("  one-time plan for the SIREN spec", "", "", "", ""))

    # ---------------------------------------------------------------- 256 ResNet-20s
    m = 64 if args.quick else 256
    rspec = ws.WeightSpaceSpec.from_module(resnet20(), torch.randn(1, 3, 32, 32))
    nets = ws.WeightSpace.from_modules([resnet20() for _ in range(8)], rspec)
    nets = ws.WeightSpace.cat([nets] * (m // 8))
    t_plan, _ = timed(lambda: ws.to_graph(nets[:1]))
    t_r, rb = timed(lambda: ws.to_graph(nets), repeat=2)
    rsds = nets[:32].to_state_dicts()
    t_rloop, _ = timed(lambda: Batch.from_data_list([ws.to_graph(sd, rspec) for sd in rsds]))

    def uncached(sd):
        plan = _Builder(rspec).build()
        x, e, extra = _features(plan, ws.WeightSpace.from_state_dicts([sd], rspec).flatten())
        return Data(x=x[0], edge_index=plan.edge_index, edge_attr=e[0], extra=extra)

    t_raw, _ = timed(lambda: Batch.from_data_list([uncached(sd) for sd in rsds[:16]]))
    rr, rl, rraw = m / t_r, 32 / t_rloop, 16 / t_raw
    rows.append((f"{m} ResNet-20s (270k weights) -> one Batch", f"{t_r:.3f} s", f"{rr:,.0f} nets/s",
                 f"loop {rraw:,.0f} nets/s (plan per network)", f"{rr / rraw:.0f}x"))
    rows.append(("", "", "", f"loop {rl:,.0f} nets/s (cached plan)", f"{rr / rl:.1f}x"))
    rows.append((f"  {rb.num_nodes:,} nodes, {rb.num_edges:,} edges; first call incl. plan", f"{t_plan:.3f} s", "",
                 "", ""))
    rows = [r for r in rows if not r[0].startswith("  one-time")]

    header = ("task", "time", "weightspace", "per-network loop (same run)", "ratio")
    print_table(header, rows)


if __name__ == "__main__":
    main()
