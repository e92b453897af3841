"""The cache of compiled kernels: a shared library is loaded only after it is verified.

Loading a damaged shared library cannot be caught: a truncated file is mapped past its end and the
process dies of SIGBUS (exit 135; with worker processes, a ``BrokenProcessPool``), and it does so on
every later run until someone deletes the file. So:

* a library is built in a private temp folder, then **test-run in a child process** (a crash kills
  the child, not the caller), then moved into place with ``os.replace`` (atomic), and only then is
  its **record** written next to it: ``<name>.json`` with its size and sha256;
* before loading, the file's size and sha256 are compared with its record (a few microseconds for
  a 20 kB file). A file without a record, or one that differs from it (truncated, overwritten,
  half-copied), is rebuilt the same way; if building fails, :func:`verified_library` returns
  ``None`` and the caller uses its fallback (torch ops), with a warning.

Temp folders left by a process killed while compiling (``.build-*``) are removed after an hour.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

STALE_SECONDS = 3600


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/weightspace/kernels`` (default ``~/.cache/weightspace/kernels``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "weightspace" / "kernels"


def cpu_id() -> str:
    """The CPU's feature flags (part of a library's cache key: it is built with ``-march=native``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def file_record(path: Path) -> dict:
    """``{"size": bytes, "sha256": hex}`` of a file."""
    data = Path(path).read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def record_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".json")


def is_verified(lib: Path) -> bool:
    """Whether ``lib`` exists and matches the record written when it was built."""
    try:
        expected = json.loads(record_path(lib).read_text())
        st = lib.stat()
    except (OSError, ValueError):
        return False
    return isinstance(expected, dict) and expected.get("size") == st.st_size and file_record(lib) == expected


def verified_library(target: Path, source: str, compile_cmd, probe: str) -> Path | None:
    """The path of a verified build of ``source`` at ``target``, building it if needed; ``None`` when
    it cannot be built (a warning says why).

    ``compile_cmd(src, out)``: the compiler command line (a list) that builds ``out`` from the C file
    ``src``. ``probe``: Python source run in a child process with the library's path in
    ``sys.argv[1]``; it must exit 0 only if the library loads and computes correctly.
    """
    target = Path(target)
    if is_verified(target):
        return target
    if target.exists() and record_path(target).exists():      # (no record: built by an older version)
        warnings.warn(f"weightspace: the cached kernel library {target} does not match the size and checksum "
                      "recorded when it was built (damaged?); rebuilding it", stacklevel=3)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        src, lib = tmp / "kernels.c", tmp / target.name
        src.write_text(source)
        done = subprocess.run(compile_cmd(src, lib), capture_output=True, text=True)
        if done.returncode != 0:
            return _give_up(f"could not compile it with {compile_cmd(src, lib)[0]} ({done.stderr.strip()[:300]})")
        why = _probe(lib, probe)
        if why:
            return _give_up(f"the freshly built library fails its test ({why})")
        record = file_record(lib)
        os.replace(lib, target)                   # atomic: concurrent processes never see half a file
        _write_atomic(record_path(target), json.dumps(record), tmp)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _probe(lib: Path, probe: str) -> str | None:
    """``None`` if ``probe`` passes in a child process, else what went wrong."""
    try:
        done = subprocess.run([sys.executable, "-c", probe, str(lib)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "the test timed out"
    if done.returncode < 0:
        return f"the test process died of signal {-done.returncode}"
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1][:300]
    return None


def _write_atomic(path: Path, text: str, tmp_dir: Path) -> None:
    part = tmp_dir / (path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def _remove_stale(folder: Path) -> None:
    now = time.time()
    for d in folder.glob(".build-*"):
        try:
            if now - d.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _give_up(why: str) -> None:
    warnings.warn(f"weightspace: SIREN C kernels unavailable: {why}; fitting uses torch ops instead", stacklevel=4)
    return None
