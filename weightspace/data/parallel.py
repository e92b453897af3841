"""Worker processes for INR fitting: each fits a share of the images with its own (few) threads.

One OpenMP thread per process is the robust way to use several cores on a shared machine: with two
threads in one process, a core taken by another job stalls every parallel region (measured here:
20x slower under load), while independent processes just slow down proportionally.

Ctrl-C: only the parent handles it. Workers ignore SIGINT (a terminal sends it to the whole process
group; a worker interrupted while holding a queue's lock used to leave its parent waiting for minutes),
and are started with the interrupt deferred (:func:`weightspace.interrupts.deferred_sigint`), so no
worker exists that its pool does not know. When the work ends with an exception, Ctrl-C included, the
pool terminates its workers at once (``SIGTERM``, then ``SIGKILL`` after a few seconds) instead of
waiting for them: their results would be thrown away, and a resumed run recomputes them.

Data crosses the process boundary by value (numpy arrays, pickled into the pipe), never as torch
tensors: multiprocessing hands a tensor over as a shared-memory file descriptor, served by a thread
of the sending process, and a worker terminated half-way through that handshake made the thread
print a ``ConnectionResetError`` traceback under the one-line "interrupted" message.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import numpy as np
import torch

from ..interrupts import deferred_sigint, ignore_sigint

_PARENT = None
_QUEUE = None


def _init_worker(threads: int, parent: int, q) -> None:
    global _PARENT, _QUEUE
    ignore_sigint()
    _PARENT, _QUEUE = parent, q
    torch.set_num_threads(max(1, int(threads)))


def by_value(obj):
    """Tensors (also inside tuples and lists) as numpy arrays, to be pickled by value."""
    if torch.is_tensor(obj):
        return obj.detach().cpu().numpy()
    if isinstance(obj, (tuple, list)):
        return type(obj)(by_value(o) for o in obj)
    return obj


def as_tensors(obj):
    """The inverse of :func:`by_value`: numpy arrays back to tensors."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(as_tensors(o) for o in obj)
    return obj


def _fit_part(x, idx, kw: dict) -> tuple:
    from .inr import _fit_pool

    def report(ids, psnr):
        if _PARENT is not None and os.getppid() != _PARENT:   # the parent died (killed run): stop working
            os._exit(1)
        _QUEUE.put(by_value((ids, psnr)))

    return by_value(_fit_pool(as_tensors(x), as_tensors(idx), kw, report))


class FitWorkers:
    """A pool of ``workers`` processes with ``threads`` torch threads each; reuse it across many
    :func:`weightspace.data.fit_inrs` calls (``workers=pool``) to pay the start-up once.

    Workers are forked where the platform allows (no ``if __name__ == "__main__"`` guard needed,
    nothing re-imported; each sets its own thread count first, as DataLoader workers do), spawned
    elsewhere. An exception (Ctrl-C included) inside :meth:`fit` or a ``with`` block terminates the
    workers at once; the pool cannot be used after that."""

    def __init__(self, workers: int = 2, threads: int = 1):
        self.workers, self.threads = int(workers), int(threads)
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._queue = ctx.Queue()
        self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                         initargs=(self.threads, os.getpid(), self._queue))

    def fit(self, x: torch.Tensor, idx: torch.Tensor, kw: dict,
            report) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split the images into ``workers`` contiguous parts, fit them in parallel, and merge."""
        N = x.shape[0]
        parts = [p for p in torch.arange(N).tensor_split(min(self.workers, N)) if len(p)]
        try:
            futures = {self.submit(x[p], idx[p], kw): p for p in parts}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                self._drain(report)
                for f in done:
                    f.result()                    # re-raise a worker's exception here
            self._drain(report)
        except BaseException:
            self.terminate()
            raise
        results = {futures[f]: f.result() for f in futures}
        flat = torch.empty(N, results[parts[0]][0].shape[1])
        psnr, steps = torch.empty(N), torch.empty(N, dtype=torch.long)
        for p, (fl, ps, st) in results.items():
            flat[p], psnr[p], steps[p] = fl, ps, st
        return flat, psnr, steps

    def submit(self, x: torch.Tensor, idx: torch.Tensor, kw: dict):
        """Fit ``x`` (indices ``idx``) in one worker; a Future of ``(params, psnr, steps)``. Progress
        arrives through :meth:`drain`."""
        with deferred_sigint():                   # submit() may start the worker processes
            inner = self._pool.submit(_fit_part, by_value(x), by_value(idx), kw)
        outer: Future = Future()

        def settle(f: Future) -> None:
            if f.cancelled():
                outer.cancel()
                outer.set_running_or_notify_cancel()      # wakes wait() on the outer future
                return
            error = f.exception()
            if error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(as_tensors(f.result()))
        inner.add_done_callback(settle)
        return outer

    def drain(self, report) -> None:
        """Pass every progress report received so far to ``report(ids, psnr)``."""
        self._drain(report)

    def _drain(self, report) -> None:
        while True:
            try:
                ids, psnr = as_tensors(self._queue.get_nowait())
            except queue_mod.Empty:
                return
            report(ids, psnr)

    def close(self) -> None:
        """Wait for the workers to finish and end them (or terminate them if interrupted meanwhile)."""
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        except BaseException:
            self.terminate()
            raise
        self._queue.close()

    def terminate(self, grace: float = 3.0) -> None:
        """End the workers now: ``SIGTERM``, and ``SIGKILL`` for any still alive after ``grace`` seconds.
        Running and queued fits are dropped."""
        # the executor's own table of its processes (ProcessPoolExecutor has no public way before 3.14)
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
        # wait for the executor's manager thread too: it reaps the same (now dead) workers, and until it
        # has recorded their exit codes a process it reaped reads as alive from any other thread
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.close()

    def __enter__(self) -> "FitWorkers":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()


def fit_in_workers(x, idx, kw, report, workers: int, threads: int = 1):
    with FitWorkers(workers, threads) as pool:
        return pool.fit(x, idx, kw, report)
