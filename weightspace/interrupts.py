"""Ctrl-C at safe points: :func:`deferred_sigint`.

Python raises ``KeyboardInterrupt`` between any two bytecodes, so a Ctrl-C can cut a step in half and
leave state that outlives the interrupt. Two such steps matter to the ``weightspace`` commands:

* starting worker processes: a worker started but not yet registered with its pool is never
  terminated, and the interpreter then waits for it at exit (a hang instead of a clean stop);
* importing third-party modules: numpy, scipy or scikit-learn interrupted half-way stay
  half-imported, and a later import fails with an ``AttributeError`` traceback instead of the
  one-line "interrupted" message.

Inside ``deferred_sigint()`` a SIGINT is recorded and delivered when the block ends, the way the
handler installed before would have (``KeyboardInterrupt`` by default). The signal is also blocked at
the OS level in the calling thread, so a process forked inside starts with SIGINT blocked; its
initializer then ignores it and unblocks it (:mod:`weightspace.data.parallel`), which leaves no
moment at which a worker could die of a Ctrl-C meant for its parent. Outside the main thread it does
nothing (only the main thread ever receives ``KeyboardInterrupt``). Keep the deferred blocks short:
the user waits for them.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["deferred_sigint", "ignore_sigint"]


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Run the block whole; a Ctrl-C that arrives meanwhile takes effect right after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits: list[int] = []
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") else None
    before = signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)     # a pending SIGINT arrives now, into `hits`
        signal.signal(signal.SIGINT, before)
        if hits:
            _deliver(before)


def _deliver(handler) -> None:
    if callable(handler):
        handler(signal.SIGINT, None)                              # default_int_handler raises KeyboardInterrupt
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signal.SIGINT)


def ignore_sigint() -> None:
    """Make this process deaf to Ctrl-C (for worker processes: their parent handles it and ends them),
    then unblock SIGINT if it was blocked by :func:`deferred_sigint` when the process was forked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
