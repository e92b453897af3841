"""Throughput and peak memory of one training step, shared by the benchmarks that run each
configuration in a fresh subprocess (``bench_layers.py``, ``bench_gmn.py``)."""
from __future__ import annotations

import os
import resource
import time
from typing import Callable


# glibc told to keep freed memory in its heap (no mmap per large tensor, no trimming), as jemalloc /
# tcmalloc would: a fresh full-size tensor then costs no page faults. Set in a configuration's
# subprocess environment, for both sides of a ratio (``--tuned-malloc`` of the benchmarks).
TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**36), "MALLOC_TOP_PAD_": str(2**28)}


def peak_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mb() -> float:
    """Resident memory now (MB), from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_step(step: Callable[[], None], model, batch: int, repeats: int) -> dict:
    """Networks/s of ``step`` (best of ``repeats`` after one warm-up: lazy widths, plans, allocator;
    ``nets_per_s_median``: the median step, what a training loop pays when some steps page-fault and
    others do not) and the peak RSS during the steps above the resident memory after setup."""
    base = current_mb()
    step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    best = min(times)
    median = sorted(times)[(len(times) - 1) // 2]
    params = sum(p.numel() for p in model.parameters())
    return {"nets_per_s": batch / best, "seconds": best, "nets_per_s_median": batch / median,
            "peak_mb": peak_mb() - base, "params": params}
