"""Fault injection: Ctrl-C at random points of ``weightspace fit-inrs --workers 2``.

Twenty runs of the real command (a tiny digits zoo: 24 INRs, 40 steps, shards of 4) are each sent
SIGINT at a random moment between start and the time an uninterrupted run takes, alternately to the
whole process group (what a terminal's Ctrl-C does: parent and workers) and to the parent alone.
Every run must end within 10 s, either with exactly the line "interrupted; rerun the same command to
resume" and exit code 2, or silently by the signal (killed before Python set up its handler), or
finished. Every shard on disk after a kill must equal the uninterrupted run's, byte for byte, and
resuming must end with exactly the uninterrupted run's files. A finished folder is compared and
started afresh, so that the kills keep landing in the middle of the work.
"""
from __future__ import annotations

import filecmp
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")

ARGS = ["fit-inrs", "--source", "digits", "--limit", "24", "--steps", "40", "--shard-size", "4", "--workers", "2",
        "--no-progress"]
MESSAGE = "weightspace fit-inrs: interrupted; rerun the same command to resume"
KILLS, EXIT_WITHIN = 20, 10.0


def _command(out: Path) -> list[str]:
    entry = Path(sys.executable).with_name("weightspace")           # the console script users run
    head = [str(entry)] if entry.is_file() else [sys.executable, "-m", "weightspace.cli"]
    return [*head, *ARGS, "--out", str(out)]


def _default_sigint() -> None:
    """A run started from a background job (``nohup make test &``) inherits SIGINT ignored, as the shell
    sets it for background commands, and then rightly stays deaf to Ctrl-C; the runs here are Ctrl-C'd
    on purpose, so they start with the default disposition a terminal gives."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(_command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,                    # its own group: killpg spares pytest
                            preexec_fn=_default_sigint)


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_files(out: Path, ref: Path) -> None:
    got, want = _files(out), _files(ref)
    assert sorted(got) == sorted(want)
    differ = [name for name in want if not filecmp.cmp(got[name], want[name], shallow=False)]
    assert not differ, f"files differ from the uninterrupted run: {differ}"


def test_ctrl_c_at_random_points_exits_fast_and_resumes_to_identical_files(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # kernels are built (and maybe cut) here too
    ref, out = tmp_path / "ref", tmp_path / "out"
    t0 = time.monotonic()
    done = subprocess.run(_command(ref), capture_output=True, text=True, env=env, timeout=300)
    full = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    rng = random.Random(19)
    outcomes = []
    for i in range(KILLS):
        proc = _start(out, env)
        time.sleep(rng.uniform(0.0, full))
        group = i % 2 == 0
        try:
            os.killpg(proc.pid, signal.SIGINT) if group else proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass                                                      # it had already finished
        t_kill = time.monotonic()
        try:
            _, err = proc.communicate(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"kill {i} ({'group' if group else 'parent'}): still running {EXIT_WITHIN} s after SIGINT")
        waited = time.monotonic() - t_kill
        rc = proc.returncode
        outcomes.append((rc, round(waited, 2)))
        if rc == 2:
            assert err == MESSAGE + "\n", f"kill {i}: stderr was\n{err}"
        elif rc == -signal.SIGINT:
            assert err == "", f"kill {i}: died of SIGINT after printing\n{err}"
        else:
            assert rc == 0, f"kill {i}: exit code {rc}, stderr\n{err}"
        if (out / "shards").is_dir():                                 # only whole shards, each as it should be
            for name, path in _files(out / "shards").items():
                if not name.startswith("."):
                    assert filecmp.cmp(path, ref / "shards" / name, shallow=False), f"kill {i}: {name} differs"
        if rc == 0:
            _same_files(out, ref)
            shutil.rmtree(out)
    assert any(rc == 2 for rc, _ in outcomes), outcomes              # the kills did land during the work
    done = subprocess.run(_command(out), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    _same_files(out, ref)
    print(f"uninterrupted run {full:.1f} s; kills (exit code, seconds to exit): {outcomes}")
