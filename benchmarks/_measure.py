"""Throughput and peak memory of one training step, shared by the benchmarks that run each
configuration in a fresh subprocess (``bench_layers.py``, ``bench_gmn.py``)."""
from __future__ import annotations

import os
import resource
import time
from typing import Callable


def peak_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mb() -> float:
    """Resident memory now (MB), from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_step(step: Callable[[], None], model, batch: int, repeats: int) -> dict:
    """Networks/s of ``step`` (best of ``repeats`` after one warm-up: lazy widths, plans, allocator)
    and the peak RSS during the steps above the resident memory after setup."""
    base = current_mb()
    step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    best = min(times)
    params = sum(p.numel() for p in model.parameters())
    return {"nets_per_s": batch / best, "seconds": best, "peak_mb": peak_mb() - base, "params": params}
