"""`weightspace demo` (`make demo`): the project's main job on embedded data, one step per module.

Each step is a module in this package with ``run(out_dir: Path) -> None`` that prints what it measured
and says where it wrote files. Add a step by adding a module and its name to ``STEPS``.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

STEPS = ["symmetry", "graph", "inr", "merge", "metanet", "classify"]


def run(out_dir: str | Path = "out/demo", steps: list[str] | None = None) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(steps or STEPS, 1):
        module = importlib.import_module(f"{__name__}.{name}")
        title = (module.__doc__ or name).strip().splitlines()[0]
        print("=" * 88)
        print(f"{i}. {title}")
        print("=" * 88)
        t0 = time.perf_counter()
        module.run(out_dir)
        print(f"[step '{name}' took {time.perf_counter() - t0:.1f} s]\n")
    print(f"Demo finished; files are in {out_dir.resolve()}:")
    for path in sorted(out_dir.glob("*.png")):
        print(f"  {path.name:40s} plot")
    for path in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        kind = "INR zoo (weightspace.load_zoo)" if (path / "manifest.json").is_file() else "training runs"
        print(f"  {path.name + '/':40s} {kind}")
