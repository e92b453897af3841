"""Alignment benchmark: barriers and timings of Git Re-Basin methods, side by side with `rebasin`.

For each model pair (two networks trained from different seeds on MNIST; the scikit-learn digits
when the MNIST files are absent):

* MLP 784-512-512-512-10 (Git Re-Basin's MNIST MLP),
* ResNet-20 (width 8, BatchNorm) on 1x28x28 images,
* a Transformer encoder (2 layers, 4 heads, dim 64) reading the 28 image rows as tokens,

it measures the loss / accuracy barrier on the linear path between A and B (test images) for:
naive interpolation, weight matching, activation matching, the straight-through estimator (STE),
Sinkhorn (L2), and the PyPI `rebasin` package's weight matching (run from its own virtual
environment on the same checkpoints, in the same run), each also with REPAIR (and, for BatchNorm
networks, with a BatchNorm statistics reset); plus the time each
alignment takes and whether the aligned network still computes B's function.

Run: ``python benchmarks/bench_align.py`` (first run trains and caches the six networks under
benchmarks/.cache, about 10 minutes on 2 cores; later runs reuse them). ``--quick``: digits, short
training, MLP only. ``--rebasin-python PATH``: the interpreter of the environment that has
`rebasin` installed (default: .bench-venv/bin/python; ``make bench-align`` creates it:
``python -m venv .bench-venv && .bench-venv/bin/pip install torch rebasin -e .``, as the runner
imports ``weightspace.models`` for the architectures).

Curves: 11 points without REPAIR, 5 with REPAIR (REPAIR re-measures statistics at every point);
the midpoint is on both. Loss barrier = max over the path of loss minus the linear interpolation of
the endpoints' losses; accuracy barrier likewise, in percentage points. Timings of weight matching,
activation matching and rebasin are medians of 3 runs (seeds 0, 1, 2 for the random visiting order
of both weight matchings); on a shared machine they are noisy.
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import weightspace as ws
from weightspace.align import (activation_matching, endpoint_statistics, repair, reset_bn_statistics, sinkhorn_matching,
                               ste_matching, weight_matching)
from weightspace.align.bn import batchnorm_modules
from weightspace.cli import load_factory
from weightspace.merge import BarrierCurve, barrier_curve, interpolate, plot_barrier

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"


# ------------------------------------------------------------------------------------------- data


def read_idx(path: Path) -> torch.Tensor:
    """An unsigned-byte IDX file (MNIST's format), gzipped or not, as a uint8 tensor."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated ({data.size} values for shape {shape})")
    return torch.from_numpy(data.reshape(shape).copy())


@dataclass
class Data:
    name: str
    side: int                      # images are side x side
    x_train: torch.Tensor          # [N, side, side] standardized
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_data(mnist_dir: Path, quick: bool) -> Data:
    files = {k: mnist_dir / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
             for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    if not quick and all(p.is_file() for p in files.values()):
        xtr, xte = (read_idx(files[k]).float() / 255 for k in ("train-images", "t10k-images"))
        ytr, yte = (read_idx(files[k]).long() for k in ("train-labels", "t10k-labels"))
        xtr, xte = (xtr - 0.1307) / 0.3081, (xte - 0.1307) / 0.3081
        return Data("MNIST", 28, xtr, ytr, xte, yte)
    from weightspace.data.digits import digits
    print(f"MNIST files not found in {mnist_dir} (or --quick): using the scikit-learn digits")
    (xtr, ytr), (xte, yte) = digits(image=True)
    return Data("digits", 8, xtr[:, 0], ytr, xte[:, 0], yte)


# ------------------------------------------------------------------------------------------- models


@dataclass
class Config:
    key: str
    title: str
    factory: str
    kwargs: Callable[[int], dict]
    view: Callable[[torch.Tensor], torch.Tensor]   # [N, side, side] -> model input
    epochs: int
    batch: int = 128
    lr: float = 1e-3
    eval_n: int = 10000       # test images for the curves
    stat_n: int = 5000        # training images for activation statistics / REPAIR
    ste_steps: int = 200
    sinkhorn_steps: int = 200


def configs(quick: bool) -> list[Config]:
    out = [
        Config("mlp", "MLP 784-512-512-512-10", "weightspace.models:mlp",
               lambda s: {"widths": [s * s, 512, 512, 512, 10]}, lambda x: x.reshape(len(x), -1),
               epochs=2 if quick else 20, batch=256, ste_steps=30 if quick else 300),
        Config("resnet", "ResNet-20 (width 8)", "weightspace.models:resnet20",
               lambda s: {"num_classes": 10, "width": 8, "in_channels": 1}, lambda x: x.unsqueeze(1),
               epochs=3, eval_n=2000, stat_n=2000, ste_steps=100, sinkhorn_steps=200),
        Config("transformer", "Transformer (2 layers, 4 heads, dim 64)", "weightspace.models:TinyTransformer",
               lambda s: {"in_features": s, "seq_len": s, "dim": 64, "heads": 4, "depth": 2, "num_classes": 10},
               lambda x: x, epochs=5, eval_n=2000, stat_n=2000, ste_steps=100, sinkhorn_steps=200),
    ]
    if quick:
        out = out[:1]
    return out


def build(cfg: Config, data: Data) -> torch.nn.Module:
    return load_factory(cfg.factory)(**cfg.kwargs(data.side))


def train(cfg: Config, data: Data, seed: int) -> dict[str, torch.Tensor]:
    """Train (or load from the cache) one network; checkpoints are written as safetensors and as
    weights-only torch files (for the rebasin environment)."""
    path = CACHE / f"{data.name}_{cfg.key}_e{cfg.epochs}_seed{seed}.safetensors"
    if path.is_file():
        return ws.load_checkpoint(path)
    torch.manual_seed(seed)
    model = build(cfg, data)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    x, y = cfg.view(data.x_train), data.y_train
    steps = cfg.epochs * ((len(y) + cfg.batch - 1) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    model.train()
    with tqdm(total=steps, desc=f"train {cfg.key} seed {seed}", leave=False) as bar:
        for _ in range(cfg.epochs):
            order = torch.randperm(len(y), generator=gen)
            for s in range(0, len(y), cfg.batch):
                idx = order[s:s + cfg.batch]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    state = {k: v.detach().clone() for k, v in model.eval().state_dict().items()}
    ws.save_checkpoint(state, path)
    return state


# ------------------------------------------------------------------------------------------- measuring


THREADS: int | None = None  # torch threads for the timed alignment calls (--threads)


def median_time(fn: Callable, repeats: int):
    """``(result of the first call, median seconds)``; ``fn(i)`` gets the repeat index (a seed)."""
    times, out = [], None
    before = torch.get_num_threads()
    if THREADS:
        torch.set_num_threads(THREADS)
    try:
        for i in range(repeats):
            t0 = time.perf_counter()
            r = fn(i)
            times.append(time.perf_counter() - t0)
            out = r if i == 0 else out
    finally:
        torch.set_num_threads(before)
    return out, statistics.median(times)


@torch.no_grad()
def function_error(model: torch.nn.Module, b: dict, aligned: dict, x: torch.Tensor) -> float:
    """Largest output change (relative to the largest output) between B and its aligned copy."""
    from weightspace.data.batches import functional_forward
    model.eval()
    yb, ya = functional_forward(model, b, (x,)), functional_forward(model, aligned, (x,))
    return float((yb - ya).abs().max() / yb.abs().max())


@dataclass
class Row:
    method: str
    seconds: float | None
    curve: BarrierCurve
    repaired: BarrierCurve | None = None
    reset: BarrierCurve | None = None
    fn_err: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def rebasin_runs(cfgs: list[Config], data: Data, states: dict, python: Path, repeats: int) -> dict[str, dict]:
    """Run the `rebasin` package in its own environment on the cached pairs; returns per model its
    timings and its permuted B (or the error)."""
    if not python.is_file():
        print(f"no rebasin environment at {python}: skipping the rebasin comparison")
        return {}
    items = []
    for cfg in cfgs:
        a, b = states[cfg.key]
        paths = {k: CACHE / f"rebasin_{data.name}_{cfg.key}_{k}.pt" for k in ("a", "b", "inputs", "out")}
        torch.save(a, paths["a"])
        torch.save(b, paths["b"])
        torch.save(cfg.view(data.x_train[:64]), paths["inputs"])
        items.append({"name": cfg.key, "factory": cfg.factory, "kwargs": cfg.kwargs(data.side),
                      **{k: str(v) for k, v in paths.items()}, "repeats": repeats, "threads": THREADS})
    job = CACHE / "rebasin_job.json"
    job.write_text(json.dumps({"items": items}))
    proc = subprocess.run([str(python), str(ROOT / "benchmarks" / "_rebasin_runner.py"), str(job)],
                          capture_output=True, text=True, cwd=ROOT)
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            if "error" not in r:
                r["state"] = torch.load(CACHE / f"rebasin_{data.name}_{r['name']}_out.pt", weights_only=True)
            out[r["name"]] = r
    if proc.returncode != 0:
        print(f"rebasin runner failed:\n{proc.stderr[-2000:]}")
    return out


def bench_model(cfg: Config, data: Data, a: dict, b: dict, rb: dict | None, repeats: int, out_dir: Path) -> list[Row]:
    model = build(cfg, data).eval()
    test = (cfg.view(data.x_test[:cfg.eval_n]), data.y_test[:cfg.eval_n])
    stat_x = cfg.view(data.x_train[:cfg.stat_n])
    probe = test[0][:256]
    spec, trace_s = median_time(lambda i: ws.WeightSpaceSpec.from_module(model, stat_x[:2]), repeats)
    print(f"\n=== {cfg.title} on {data.name}: {spec.num_weights:,} weights, {len(spec.hidden_groups)} permutation "
          f"groups; spec traced in {trace_s:.2f} s (once per architecture)")

    has_bn = bool(batchnorm_modules(model))

    def curves(method, aligned, seconds, note="", n=11, with_repair=True):
        c = barrier_curve(model, a, aligned, test, n, label=method, spec=spec)
        row = Row(method, seconds, c, fn_err=function_error(model, b, aligned, probe), note=note)
        if has_bn:
            row.reset = barrier_curve(model, a, aligned, test, n, label=f"{method} + BN reset", spec=spec,
                                      correct=lambda s, t: reset_bn_statistics(model, s, stat_x))
        if with_repair:
            t0 = time.perf_counter()
            stats = endpoint_statistics(model, [a, aligned], stat_x, spec=spec)
            repair(model, interpolate(a, aligned, 0.5), None, stat_x, spec=spec, statistics=stats)
            row.extra["repair_s"] = time.perf_counter() - t0
            row.repaired = barrier_curve(model, a, aligned, test, 5, label=f"{method} + REPAIR", spec=spec,
                                         correct=lambda s, t: repair(model, s, None, stat_x, weights=(1 - t, t),
                                                                     spec=spec, statistics=stats))
        print(f"  {method:22s} done" + (f" ({seconds:.2f} s)" if seconds is not None else ""), flush=True)
        return row

    rows = [curves("naive", b, None)]
    info: dict = {}
    perms, s = median_time(lambda i: weight_matching(spec, a, b, seed=i, info=info if i == 0 else None), repeats)
    rows.append(curves("weight matching", ws.permute(b, spec, perms), s, note=f"{info['sweeps']} sweeps"))
    if rb is not None:
        if "error" in rb:
            print(f"  rebasin failed: {rb['error']}")
        else:
            r = curves("rebasin (PyPI)", rb["state"], rb["init_s"] + rb["rebasin_s"],
                       note=f"set-up {rb['init_s']:.2f} s + rebasin() {rb['rebasin_s']:.2f} s; moved "
                            f"{100 * rb['moved_fraction']:.0f}% of B's entries")
            r.extra.update(rb_init=rb["init_s"], rb_run=rb["rebasin_s"])
            rows.append(r)
    perms, s = median_time(lambda i: activation_matching(spec, a, b, stat_x, model=model), repeats)
    rows.append(curves("activation matching", ws.permute(b, spec, perms), s, note=f"{cfg.stat_n} images"))
    perms, s = median_time(lambda i: ste_matching(spec, model, a, b, (cfg.view(data.x_train), data.y_train),
                                                steps=cfg.ste_steps, batch_size=256, seed=0), 1)
    rows.append(curves("STE", ws.permute(b, spec, perms), s, note=f"{cfg.ste_steps} steps of 256"))
    perms, s = median_time(lambda i: sinkhorn_matching(spec, a, b, steps=cfg.sinkhorn_steps), 1)
    rows.append(curves("Sinkhorn (L2)", ws.permute(b, spec, perms), s, note=f"{cfg.sinkhorn_steps} steps"))

    table = print_table(cfg, data, rows)
    with open(out_dir / "bench_align.md", "a") as f:
        f.write(table + "\n\n")
    main_rows = [r for r in rows if r.method in ("naive", "weight matching", "activation matching", "STE")]
    png = plot_barrier([r.reset or r.curve for r in main_rows] + [r.repaired for r in main_rows if r.repaired],
                       out_dir / f"bench_align_{cfg.key}.png", title=f"{cfg.title} on {data.name}")
    print(f"barrier plot: {png}")
    return rows


def fmt_curve(c: BarrierCurve) -> list[str]:
    return [f"{c.at(0.5):.4f}", f"{c.loss_barrier:.4f}", f"{100 * c.at(0.5, 'accuracy'):.2f}%",
            f"{100 * c.accuracy_barrier:.2f}"]


def print_table(cfg: Config, data: Data, rows: list[Row]) -> str:
    """Print (and return) a markdown table: one line per method and correction."""
    c0 = rows[0].curve
    lines = [f"**{cfg.title}** on {data.name}: endpoints loss {c0.loss[0]:.4f} / {c0.loss[-1]:.4f}, accuracy "
             f"{100 * c0.accuracy[0]:.2f}% / {100 * c0.accuracy[-1]:.2f}% ({cfg.eval_n} test images)", ""]
    cols = ["method", "after merging", "align time", "B's function kept", "mid loss", "loss barrier", "mid acc",
            "acc barrier (pts)"]
    table = [cols]
    for r in rows:
        kept = "-" if r.method == "naive" else ("yes" if r.fn_err < 1e-4 else f"NO ({r.fn_err:.1e})")
        t = f"{r.seconds:.3f} s" if r.seconds is not None else "-"
        table.append([r.method, "-", t, kept] + fmt_curve(r.curve))
        if r.reset is not None:
            table.append([r.method, "BN reset", "", ""] + fmt_curve(r.reset))
        if r.repaired is not None:
            table.append([r.method, f"REPAIR ({r.extra['repair_s']:.1f} s)", "", ""] + fmt_curve(r.repaired))
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for j, row in enumerate(table):
        lines.append("| " + " | ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in
                                       enumerate(zip(row, widths))) + " |")
        if j == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"{r.method}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "; ".join(notes) + "."]
    text = "\n".join(lines)
    print("\n" + text)
    return text


def floors(all_rows: dict[str, list[Row]], data: Data) -> None:
    print("\n=== Floors from the issue")
    for key, rows in all_rows.items():
        by = {r.method: r for r in rows}
        wm, rb = by.get("weight matching"), by.get("rebasin (PyPI)")
        if wm is None:
            continue
        line = f"{key:12s} weight matching {wm.seconds:.3f} s"
        if rb is not None:
            speed_total = rb.seconds / wm.seconds
            speed_run = rb.extra["rb_run"] / wm.seconds
            line += (f" vs rebasin {rb.seconds:.3f} s (set-up + rebasin()): {speed_total:.1f}x faster "
                     f"({speed_run:.1f}x vs rebasin() alone) [{'PASS' if speed_total >= 2 else 'FAIL'} >= 2x]; ")
            if rb.fn_err > 1e-4:
                line += (f"rebasin's output is not a permutation of B (outputs change by {rb.fn_err:.1e} relative), "
                         f"so its barrier is not comparable; weight matching's permutation keeps B's function "
                         f"({wm.fn_err:.0e})")
            else:
                ok = wm.curve.loss_barrier <= rb.curve.loss_barrier + 1e-4
                line += (f"loss barrier {wm.curve.loss_barrier:.4f} vs {rb.curve.loss_barrier:.4f}, midpoint loss "
                         f"{wm.curve.at(0.5):.4f} vs {rb.curve.at(0.5):.4f} "
                         f"[{'PASS' if ok else 'FAIL'} equal or lower]")
        print(line)
        if key == "mlp":
            acc = 100 * wm.curve.midpoint_accuracy_barrier
            print(f"{'':12s} {data.name} MLP midpoint accuracy barrier after weight matching: {acc:.2f} points "
                  f"[{'PASS' if acc <= 1 else 'FAIL'} within 1 point of zero]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits, short training, MLP only")
    ap.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    ap.add_argument("--models", default="mlp,resnet,transformer")
    ap.add_argument("--rebasin-python", type=Path, default=ROOT / ".bench-venv" / "bin" / "python")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (seeds 0..n-1) per method; median")
    ap.add_argument("--threads", type=int, help="torch threads for the timed alignment calls, ours and "
                                                  "rebasin's alike (1 gives stable timings on a busy machine)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    if THREADS:
        torch.set_num_threads(THREADS)   # training and evaluation too
    CACHE.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_align.md").write_text("")
    data = load_data(args.mnist, args.quick)
    wanted = args.models.split(",")
    cfgs = [c for c in configs(args.quick) if c.key in wanted]
    print(f"data: {data.name}, {len(data.y_train)} training / {len(data.y_test)} test images; torch "
          f"{torch.__version__}; timed calls on {THREADS or torch.get_num_threads()} thread(s)")
    t0 = time.perf_counter()
    states = {c.key: (train(c, data, 0), train(c, data, 1)) for c in cfgs}
    print(f"networks ready in {time.perf_counter() - t0:.0f} s (cached under {CACHE})")
    rb = rebasin_runs(cfgs, data, states, args.rebasin_python, args.repeats)
    all_rows = {}
    for cfg in cfgs:
        all_rows[cfg.key] = bench_model(cfg, data, *states[cfg.key], rb.get(cfg.key) if rb else None,
                                        args.repeats, args.out)
    floors(all_rows, data)
    print(f"\nmarkdown tables: {args.out / 'bench_align.md'}")


if __name__ == "__main__":
    main()
