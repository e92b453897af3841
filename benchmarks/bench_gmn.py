"""Graph metanetworks on parameter graphs: throughput and peak memory.

Forward + backward (cross-entropy on 10 random classes, or the mean square of the edited weights for
the equivariant head) of NG-GNN (hidden 32, 4 layers: Neural Graphs' MNIST-INR setting), NG-T (hidden
64, 4 layers, 8 heads: the paper's size), GMN and ScaleGMN (hidden 64, 4 layers) on batches of 256
SIREN 2-32-32-1 weight sets, beside the equivariant-layer model UNF at the same batch, each
configuration in a fresh subprocess (peak RSS during the steps above the resident memory after
setup). Every step builds the graphs from the WeightSpace (``ws.to_graph``) as training does.
Also: GMN on 64 ResNet-20 and 64 Transformer-block weight sets.

Reference: with ``--neural-graphs REPO`` (a checkout of https://github.com/mkofinas/neural-graphs),
the repository's own NG-GNN (its MNIST-INR configuration, hidden 32, 4 layers) runs in the same
benchmark, under the same thread count and allocator, through ``_neural_graphs_ref.py`` in the
benchmark environment (``--ref-python``, default ``.bench-venv/bin/python``, which holds hydra-core and
random-fourier-features-pytorch; ``make bench-gmn`` sets it up). Without it, the issue's measurements
on these machines are printed beside our rows: 6.75 SIRENs/s and 4.9 GB for NG-GNN at batch 256.

Allocation matters on CPU: at batch 256 an edge-state tensor ``[287k, 32]`` is 37 MB, above glibc's
mmap threshold, so every fresh one is mapped from the OS and page-faulted in (~6 ms per tensor in a
VM, more than the arithmetic on it). ``--tuned-malloc`` runs the configurations with glibc told to keep
freed memory (``MALLOC_MMAP_MAX_=0``, large trim threshold), as one would with jemalloc / tcmalloc.

The machines are shared, so besides networks per wall-clock second the table gives networks per
CPU-second of the process (user + system time of the best step, page faults included): a neighbour's
load stretches wall time for both sides of a ratio, but not always equally, and CPU time is what
the work costs.

    python benchmarks/bench_gmn.py [--quick] [--threads 2] [--tuned-malloc] [--only nggnn]
        [--neural-graphs out/bench/neural-graphs] [--ref-python .bench-venv/bin/python]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _measure import TUNED_MALLOC, measure_step

NEURAL_GRAPHS = {"nggnn": (6.75, 4.9 * 1024)}           # SIRENs/s, peak MB (issue 13, measured)


def cpu_timed(step):
    """``(wrapped step, list)``: the wrapper appends each call's CPU time (user + system, seconds)."""
    import resource

    seconds: list[float] = []

    def wrapped():
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        step()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        seconds.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)

    return wrapped, seconds


def measure(step, model, batch: int, repeats: int) -> dict:
    """``measure_step`` plus ``nets_per_cpu_s``: networks per CPU-second of the best timed step."""
    wrapped, seconds = cpu_timed(step)
    out = measure_step(wrapped, model, batch, repeats)
    return dict(out, nets_per_cpu_s=batch / min(seconds[1:]))


def _weights(arch: str, batch: int):
    import torch

    import weightspace as ws
    from weightspace.models import SIREN, TinyTransformer, resnet20

    if arch == "siren":
        net, x0 = SIREN(2, (32, 32), 1), torch.zeros(1, 2)
    elif arch == "resnet20":
        net, x0 = resnet20(width=8), torch.zeros(1, 3, 32, 32)
    else:
        net, x0 = TinyTransformer(depth=1), torch.zeros(1, 8, 16)
    spec = ws.WeightSpaceSpec.from_module(net.eval(), x0)
    gen = torch.Generator().manual_seed(0)
    return ws.WeightSpace(spec, {p.name: torch.randn(batch, *p.shape, generator=gen) * 0.1 for p in spec.params})


def _model(name: str, spec, equivariant: bool):
    from weightspace.nn import UNF
    from weightspace.nn.graph import GMN, NGGNN, NGT, ScaleGMN

    k = None if equivariant else 10
    return {"nggnn": lambda: NGGNN(hidden=32, layers=4, out_features=k),
            "ngt": lambda: NGT(hidden=64, layers=4, heads=8, out_features=k),
            "gmn": lambda: GMN(hidden=64, layers=4, out_features=k),
            "scalegmn": lambda: ScaleGMN(hidden=64, layers=4, out_features=k),
            "unf": lambda: UNF(spec, channels=(32,) * 4, out_features=k)}[name]()


def run_one(cfg: dict) -> dict:
    """One configuration, in this (fresh) process: networks/s of forward + backward, peak RSS."""
    import torch

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    w = _weights(cfg["arch"], cfg["batch"])
    model = _model(cfg["model"], w.spec, cfg["equivariant"])
    labels = torch.randint(0, 10, (cfg["batch"],), generator=torch.Generator().manual_seed(0))

    forward = torch.compile(model) if cfg.get("compile") else model

    def step():
        out = forward(w)
        if cfg["equivariant"]:
            loss = sum(t.square().mean() for t in out.tensors.values())
        else:
            loss = torch.nn.functional.cross_entropy(out, labels)
        loss.backward()

    return measure(step, model, cfg["batch"], cfg["repeats"])


def in_subprocess(cfg: dict, tuned_malloc: bool = False, command: list[str] | None = None) -> dict | None:
    env = dict(os.environ, **TUNED_MALLOC) if tuned_malloc else None
    command = command or [sys.executable, os.path.abspath(__file__), "--one"]
    out = subprocess.run([*command, json.dumps(cfg)], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    if out.returncode != 0:
        print(f"[{cfg}] failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 64, one timed step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tuned-malloc", action="store_true", help="keep freed memory in glibc's heap (see above)")
    ap.add_argument("--compile", action="store_true", help="add NG-GNN and GMN rows run through torch.compile "
                    "(throughput after the first, compiling step)")
    ap.add_argument("--only", help="run only this model's rows (nggnn, ngt, gmn, scalegmn, unf)")
    ap.add_argument("--neural-graphs", metavar="REPO", help="checkout of mkofinas/neural-graphs: run its NG-GNN here")
    ap.add_argument("--ref-python", default=".bench-venv/bin/python",
                    help="python of the benchmark environment that runs the reference")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    sys.path.insert(0, os.path.dirname(__file__))
    import torch
    from _table import print_table

    torch.set_num_threads(args.threads)                # the table's header reports it

    batch, repeats = (64, 1) if args.quick else (256, 2)
    rows = []
    configs = [("nggnn", "siren", False, batch), ("ngt", "siren", False, batch), ("gmn", "siren", False, batch),
               ("scalegmn", "siren", False, batch), ("nggnn", "siren", True, batch), ("unf", "siren", False, batch),
               ("gmn", "resnet20", False, 64), ("gmn", "transformer", False, 64)]
    reference = None
    if args.neural_graphs:
        ref_cmd = [os.path.abspath(args.ref_python), "_neural_graphs_ref.py", os.path.abspath(args.neural_graphs)]
        r = in_subprocess({"batch": batch, "threads": args.threads, "repeats": repeats}, args.tuned_malloc, ref_cmd)
        if r is not None:
            reference = (r["nets_per_s"], r["peak_mb"], r["params"], r["nets_per_cpu_s"])
    if args.compile:
        configs[1:1] = [("nggnn", "siren", False, batch, True)]
        configs.append(("gmn", "siren", False, batch, True))
    for name, arch, equivariant, b, *compiled in configs:
        if args.only and name != args.only:
            continue
        cfg = {"model": name, "arch": arch, "equivariant": equivariant, "batch": b, "repeats": repeats,
               "threads": args.threads, "compile": bool(compiled)}
        r = in_subprocess(cfg, args.tuned_malloc)
        label = name + (" (equivariant head)" if equivariant else "") + (" (torch.compile)" if compiled else "")
        if r is None:
            rows.append((label, arch, str(b), "failed", "", "", "", "", ""))
            continue
        ref = NEURAL_GRAPHS.get(name) if arch == "siren" and not equivariant else None
        if ref and reference:
            ref = reference
        speedup = f"{r['nets_per_s'] / ref[0]:.1f}x" if ref else ""
        cpu_speedup = f"{r['nets_per_cpu_s'] / ref[3]:.1f}x" if ref and len(ref) > 3 else ""
        rows.append((label, arch, str(b), f"{r['nets_per_s']:.1f}", f"{r['nets_per_cpu_s']:.1f}", f"{r['peak_mb']:.0f}",
                     f"{r['params']:,}", speedup, cpu_speedup))
        if ref and not compiled:
            what = "run here, same threads and allocator" if reference else "the issue's figures"
            measured = len(ref) > 3
            rows.append((f"neural-graphs NG-GNN ({what})", arch, str(b), f"{ref[0]:.2f}",
                         f"{ref[3]:.2f}" if measured else "", f"{ref[1]:.0f}", f"{ref[2]:,}" if measured else "",
                         "1x", "1x" if measured else ""))
    print(f"glibc malloc: {'tuned (MALLOC_MMAP_MAX_=0)' if args.tuned_malloc else 'default'}")
    print_table(("model", "weights", "batch", "nets/s (fwd+bwd)", "nets/CPU-s", "peak MB", "params",
                 "vs neural-graphs", "vs neural-graphs (CPU)"), rows)


if __name__ == "__main__":
    main()
