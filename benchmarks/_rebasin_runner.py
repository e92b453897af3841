"""Run the PyPI `rebasin` package (snimu/rebasin) on checkpoint pairs, for bench_align.py.

Runs in the benchmark's own virtual environment (rebasin is not a dependency of weightspace):

    .bench-venv/bin/python benchmarks/_rebasin_runner.py job.json

``job.json``: ``{"items": [{"name", "factory" (MODULE:FACTORY), "kwargs", "a", "b" (weights-only torch
files), "inputs" (a torch file with the example batch), "out" (where to write rebasin's permuted b),
"repeats"}]}``. Prints one JSON object per item: median seconds of the set-up
(``PermutationCoordinateDescent(...)``: graph tracing) and of ``rebasin()`` over the repeats, the
fraction of B's entries it moved, or the error it raised.
"""
from __future__ import annotations

import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # weightspace.models for the architectures


def build(factory: str, kwargs: dict) -> torch.nn.Module:
    module, _, attr = factory.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj(**kwargs)


def run_item(item: dict) -> dict:
    from rebasin import PermutationCoordinateDescent

    a_state = torch.load(item["a"], weights_only=True)
    b_state = torch.load(item["b"], weights_only=True)
    x = torch.load(item["inputs"], weights_only=True)
    if item.get("threads"):
        torch.set_num_threads(int(item["threads"]))
    init_times, run_times = [], []
    result_state = None
    for r in range(item.get("repeats", 3)):
        torch.manual_seed(r)
        model_a = build(item["factory"], item["kwargs"]).eval()
        model_b = build(item["factory"], item["kwargs"]).eval()
        model_a.load_state_dict(a_state)
        model_b.load_state_dict(b_state)
        t0 = time.perf_counter()
        pcd = PermutationCoordinateDescent(model_a, model_b, x)
        t1 = time.perf_counter()
        pcd.rebasin()
        t2 = time.perf_counter()
        init_times.append(t1 - t0)
        run_times.append(t2 - t1)
        if result_state is None:
            result_state = {k: v.detach().clone() for k, v in model_b.state_dict().items()}
    torch.save(result_state, item["out"])
    moved = sum(int((result_state[k] != b_state[k]).sum()) for k in b_state if b_state[k].is_floating_point())
    total = sum(b_state[k].numel() for k in b_state if b_state[k].is_floating_point())
    return {"name": item["name"], "init_s": statistics.median(init_times), "rebasin_s": statistics.median(run_times),
            "moved_fraction": moved / total}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    for item in job["items"]:
        try:
            out = run_item(item)
        except Exception as e:  # report and go on: a failure is a result too
            out = {"name": item["name"], "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
