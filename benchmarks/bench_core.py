"""Core benchmark: tracing a ResNet-18 into a spec, permuting a batch of 1,000 SIREN weight sets.

References measured in the same run:
* tracing: plain ``torch.fx.symbolic_trace`` of the same model (graph only, no symmetry analysis);
* permuting: a straightforward per-network loop (one ``permute`` call per state dict).

Run: ``python benchmarks/bench_core.py`` (``--quick`` for a smoke run).
"""
from __future__ import annotations

import argparse
import time

import torch
from _table import print_table
import torch.fx

import weightspace as ws
from weightspace.models import SIREN, resnet18


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--networks", type=int, default=1000)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []

    # --- tracing ResNet-18 (11.7M parameters) at 224x224
    model = resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    repeat = 1 if args.quick else 3
    t_fx = best_of(lambda: torch.fx.symbolic_trace(model), repeat)
    t_spec_nocheck = best_of(lambda: ws.WeightSpaceSpec.from_module(model, x, check=False), repeat)
    t_spec = best_of(lambda: ws.WeightSpaceSpec.from_module(model, x), repeat)
    spec = ws.WeightSpaceSpec.from_module(model, x, check=False)
    rows.append(("trace ResNet-18 -> spec (no self-check)", f"{t_spec_nocheck * 1000:.0f} ms",
                 f"fx.symbolic_trace {t_fx * 1000:.0f} ms", f"{t_spec_nocheck / t_fx:.1f}x of fx"))
    rows.append(("trace ResNet-18 -> spec (with self-check)", f"{t_spec * 1000:.0f} ms", "", ""))
    rows.append((f"  {len(spec.params)} tensors, {spec.num_weights:,} weights", f"{len(spec.groups)} groups",
                 f"{len(spec.scalings)} scalings", ""))

    # --- permuting a batch of SIREN weight sets
    n = 100 if args.quick else args.networks
    siren_spec = ws.WeightSpaceSpec.from_module(SIREN(), torch.rand(4, 2))
    nets = [SIREN().state_dict() for _ in range(n)]
    space = ws.WeightSpace.from_state_dicts(nets, siren_spec)
    g = torch.Generator().manual_seed(0)
    perms = ws.random_permutation(siren_spec, generator=g, batch_size=n)

    def loop():
        return [ws.permute(nets[i], siren_spec, {k: v[i] for k, v in perms.items()}) for i in range(n)]

    def batched():
        return ws.permute(space, siren_spec, perms)

    shared = ws.random_permutation(siren_spec, generator=g)
    batched()  # warm the per-spec index cache
    t_loop = best_of(loop, 1 if args.quick else 3)
    t_batch = best_of(batched, 5 if args.quick else 20)
    t_shared = best_of(lambda: ws.permute(space, siren_spec, shared), 5 if args.quick else 20)
    check = batched()
    ref = loop()
    assert all(torch.equal(check[k][i], ref[i][k]) for i in range(0, n, max(1, n // 10)) for k in siren_spec.names)
    rows.append((f"permute {n} SIRENs, one element each (batched)", f"{t_batch * 1000:.2f} ms",
                 f"loop {t_loop * 1000:.0f} ms", f"{t_loop / t_batch:.0f}x faster"))
    rows.append((f"permute {n} SIRENs, one shared element", f"{t_shared * 1000:.2f} ms", "",
                 f"{n / t_shared:,.0f} networks/s"))
    sc = ws.random_scaling(siren_spec, generator=g, batch_size=n)
    fl = ws.random_sign_flip(siren_spec, generator=g, batch_size=n)
    t_flip = best_of(lambda: ws.flip_sign(space, siren_spec, fl), 5 if args.quick else 20)
    rows.append((f"sign-flip {n} SIRENs, one element each", f"{t_flip * 1000:.2f} ms", "",
                 f"{n / t_flip:,.0f} networks/s"))
    del sc

    header = ("task", "weightspace", "reference (same run)", "ratio")
    print_table(header, rows)


if __name__ == "__main__":
    main()
