"""Per-spec caches of derived index arithmetic, kept beside the spec rather than inside it.

A :class:`~weightspace.WeightSpaceSpec` is immutable, so anything computed from it (where each
group acts, gather plans, graph plans) can be computed once and reused. The store is keyed by the
spec object's identity and dropped when the spec is garbage-collected; the frozen spec itself is
never written to.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_STORES: dict[int, dict[str, Any]] = {}
_LOCK = threading.Lock()


def _store(spec: Any) -> dict[str, Any]:
    key = id(spec)
    store = _STORES.get(key)
    if store is None:
        with _LOCK:
            store = _STORES.get(key)
            if store is None:
                store = _STORES[key] = {}
                weakref.finalize(spec, _STORES.pop, key, None)
    return store


def cached(spec: Any, key: str, build: Callable[[], T]) -> T:
    """``build()`` once per (spec, key); later calls return the same object."""
    store = _store(spec)
    try:
        return store[key]
    except KeyError:
        value = store[key] = build()
        return value


def clear_cache(spec: Any | None = None) -> None:
    """Forget cached plans of one spec (or of all specs)."""
    with _LOCK:
        if spec is None:
            for store in _STORES.values():
                store.clear()
        elif id(spec) in _STORES:
            _STORES[id(spec)].clear()
