"""Scaling out: training throughput with 1 and 2 processes (torchrun, DDP on gloo) and INR-zoo
generation throughput with 1 and 2 ranks, on this machine's CPUs, in one table.

Every row runs the real command in a fresh process tree (``weightspace train`` / ``fit-inrs``, plain
or under ``torchrun --nproc_per_node 2``), one thread per process, on the same data:

* training: ``--epochs E`` of ``nfn-np`` on an INR zoo at the same global batch (so the 2-process run
  does the same math); throughput = training networks x epochs / the run's own ``train_seconds``
  (metrics.json: the epochs, validation included, without start-up: the work column); the wall
  column includes start-up (interpreters importing torch, the gloo rendezvous, loading the zoo);
* zoo generation: ``fit-inrs --source digits`` with ``--workers 1`` per rank, and the worker-pool
  alternative in one process (``--workers 2``) as a second reference; every process times its own
  command (``weightspace.cli.main``, after the interpreter and torch are loaded); the work column
  runs from the first process's start to the last one's end, and the throughput is INRs / work
  seconds. Best of ``--repeat`` runs.

The ratio column is against the 1-process row of the same workload, measured in the same run. The
load average before and after is printed: on a shared machine a second process only helps when a
second core is free, so read the ratios with it.

Run: ``python benchmarks/bench_distributed.py`` (``--quick`` for a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], nproc: int, stamps: Path) -> tuple[float, float]:
    """``(wall s, work s)`` of ``weightspace CMD`` (under torchrun when ``nproc > 1``): wall of the whole
    process tree, work from the first process's command start to the last one's end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    stamps.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    done = subprocess.run([*launcher, __file__, "--time-to", str(stamps), *cmd], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    spans = [json.loads(f.read_text()) for f in stamps.glob("rank-*.json")]
    assert len(spans) == nproc, spans
    return wall, max(e for _, e in spans) - min(s for s, _ in spans)


def timed_command(stamps: str, cmd: list[str]) -> int:
    """Run ``weightspace CMD`` in this process and write its start and end times (epoch seconds)."""
    from weightspace.cli import main as cli

    start = time.time()
    code = cli(cmd)
    Path(stamps, f"rank-{os.environ.get('RANK', '0')}.json").write_text(json.dumps([start, time.time()]))
    return code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (tiny sizes)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per row, the best kept (default 2)")
    ap.add_argument("--time-to", help=argparse.SUPPRESS)
    a, rest = ap.parse_known_args()
    if a.time_to:
        sys.exit(timed_command(a.time_to, rest))
    torch.set_num_threads(1)
    images, steps, epochs = (200, 20, 1) if a.quick else (1797, 1000, 10)
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        tmp = Path(tmp)
        fit = ["fit-inrs", "--source", "digits", "--limit", str(images), "--steps", str(steps), "--target-psnr", "99",
               "--hidden", "16,16", "--shard-size", "100", "--no-progress"]
        base = None
        for label, nproc, workers in (("1 process", 1, 1), ("1 process, 2 worker processes", 1, 2),
                                      ("torchrun, 2 ranks", 2, 1)):
            times = [run([*fit, "--workers", str(workers), "--out", str(tmp / f"zoo-{nproc}-{workers}-{r}")], nproc,
                         tmp / f"t-zoo-{nproc}-{workers}-{r}") for r in range(a.repeat)]
            wall, work = min(times, key=lambda t: t[1])
            rate = images / work
            base = base or rate
            rows.append((f"INR zoo ({images} INRs, {steps} steps)", label, f"{wall:.1f}", f"{work:.1f}",
                         f"{rate:.1f} INR/s", f"{rate / base:.2f}"))
        same = all((tmp / "zoo-1-1-0" / "shards" / p.name).read_bytes() == p.read_bytes()
                   for p in (tmp / "zoo-2-1-0" / "shards").iterdir())
        zoo = tmp / "zoo-1-1-0"
        train = ["train", "--task", "digits-inr", "--zoo", str(zoo), "--model", "nfn-np", "--epochs", str(epochs),
                 "--batch-size", "64", "--no-progress"]
        base = None
        for label, nproc in (("1 process", 1), ("torchrun, 2 processes (DDP, gloo)", 2)):
            results = []
            for r in range(a.repeat):
                out = tmp / f"run-{nproc}-{r}"
                wall, _ = run([*train, "--out", str(out)], nproc, tmp / f"t-run-{nproc}-{r}")
                results.append((wall, json.loads((out / "metrics.json").read_text())))
            wall, m = min(results, key=lambda t: t[1]["train_seconds"])
            rate = m["train_networks"] * epochs / m["train_seconds"]
            base = base or rate
            rows.append((f"train nfn-np, global batch 64, {epochs} epochs", label, f"{wall:.1f}",
                         f"{m['train_seconds']:.1f}", f"{rate:.0f} networks/s", f"{rate / base:.2f}"))
    load1 = os.getloadavg()
    print(f"{os.cpu_count()} CPUs; load average (1 min) {load0[0]:.2f} before, {load1[0]:.2f} after; "
          f"one thread per process")
    print_table(("workload", "processes", "wall s", "work s", "throughput", "x 1 process"), rows)
    print(f"2-rank zoo shards identical to the 1-rank zoo's: {same}")


if __name__ == "__main__":
    main()
