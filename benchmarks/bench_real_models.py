"""Real-model scale: tracing, parameter graphs and weight matching at the size of real checkpoints.

For ResNet-50, ViT-B/16, ConvNeXt-T, Swin-T (torchvision, random weights, no download), MLP-Mixer
S/16 (timm, ``pretrained=False``), GPT-2 small and a small Llama config (``transformers`` configs,
random weights), it measures:

* trace time, number of permutation groups, share of the weights that a group acts on;
* the parameter graph: edges, edge-feature width, build time (plan + ``to_graph``), peak memory
  above the resident memory before it, exact round trip, and the reference: the slots a graph
  padded to the widest kernel would hold (the representation before issue 20; 8-byte slot indices
  in the plan alone, so "padded GB" is what that plan asked for);
* weight matching of the network against a hidden permutation of itself: time, exact recovery, and
  with ``--reference`` the same matching with every assignment solved by scipy (no shortcuts, the
  solver before issue 20) and the speed-up, measured in the same process.

Each model runs in a fresh subprocess so that peak memory is per model. A model that does not
trace yet gets a row with the error. torchvision: where ``import torchvision`` fails on its
compiled ops (a CUDA wheel on a CPU torch), its pure-Python model definitions are imported with an
empty ``torchvision._meta_registrations`` in ``sys.modules``.

Run: ``python benchmarks/bench_real_models.py [--models resnet50 vit_b_16 ...] [--reference]
[--skip-matching]``. Times are wall clock with process CPU time in parentheses: on a shared,
loaded machine the CPU time is the comparable number.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

MODELS = ("resnet50", "vit_b_16", "convnext_tiny", "swin_t", "mixer_s16", "gpt2", "llama_small")


def _torchvision():
    try:
        import torchvision
    except ImportError as e:
        if "torchvision" in str(e) and "No module" in str(e):
            raise
        torchvision = None
    except Exception:
        torchvision = None
    if torchvision is None:                      # compiled ops fail to load: models are pure Python
        for k in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[k]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision
    return torchvision


def build(name: str):
    """``(model, example inputs)`` with random weights."""
    torch.manual_seed(0)
    if name in ("gpt2", "llama_small"):
        try:                                     # transformers imports torchvision when it is installed
            _torchvision()
        except ImportError:
            pass
        import transformers
        if name == "gpt2":
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
            vocab = 50257
        else:
            cfg = transformers.LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                           num_attention_heads=8, num_key_value_heads=4, vocab_size=1000)
            model = transformers.LlamaForCausalLM(cfg)
            vocab = 1000
        return model.eval(), (torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(0)),)
    if name == "mixer_s16":                      # timm (optional, imports torchvision)
        _torchvision()
        import timm
        model = timm.create_model("mixer_s16_224", pretrained=False)
        return model.eval(), (torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)),)
    models = _torchvision().models
    return getattr(models, name)().eval(), (torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)),)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _graph_columns(row: dict, spec, sd: dict) -> None:
    """Graph build time, peak memory, edges, width, the padded reference and the round trip."""
    import weightspace as ws
    from weightspace.graph.plan import graph_plan

    base = _rss_mb()
    exact_peak = _reset_peak()
    t, c = time.perf_counter(), time.process_time()
    plan = graph_plan(spec)
    graph = ws.to_graph(sd, spec)
    row["graph_s"], row["graph_cpu"] = time.perf_counter() - t, time.process_time() - c
    row["graph_peak_mb"] = (_peak_mb() - base) if exact_peak else float("nan")
    row["edges_m"], row["edge_dim"] = plan.num_edges / 1e6, plan.edge_dim
    widest = int((plan.edge_part.long() * plan.edge_dim + plan.edge_len).max()) if plan.num_edges else 1
    row["padded_gb"] = int((plan.edge_part == 0).sum()) * widest * 8 / 1e9    # one edge per neuron pair, padded
    back = ws.from_graph(graph, spec)
    row["round_trip"] = all(torch.equal(back[k][0], sd[k]) for k in spec.names)
    del graph, back


def run_one(name: str, matching: bool, reference: bool, max_graph_weights: float = 400e6) -> dict:
    """One model's measurements (run in a subprocess)."""
    torch.set_num_threads(1)
    import weightspace as ws
    from weightspace.align import _tree, weight_matching

    row: dict = {"model": name}
    try:
        model, inputs = build(name)
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["error"] = f"not built: {type(e).__name__}: {str(e)[:100]}"
        return row
    row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    try:
        t = time.perf_counter()
        spec = ws.WeightSpaceSpec.from_module(model, *inputs)
        row["trace_s"] = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001
        row["error"] = f"not traced yet: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
        return row
    names = spec.weight_names
    total = sum(spec[n].numel for n in names)
    row["groups"] = len(spec.groups)
    row["in_group"] = sum(spec[n].numel for n in names if spec.axis_actions(n)) / max(total, 1)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    del model
    if total > max_graph_weights:
        row["graph_skipped"] = f"graph skipped: {total / 1e6:.0f}M weights > --max-graph-weights"
    else:
        _graph_columns(row, spec, sd)
    if matching:
        b = ws.permute(sd, spec, ws.random_permutation(spec, generator=torch.Generator().manual_seed(0)))
        runs = [("match", None)] + ([("match_ref", 10**12)] if reference else [])
        for key, shortcut in runs:
            old = _tree.SHORTCUT_MIN
            if shortcut is not None:
                _tree.SHORTCUT_MIN = shortcut
            try:
                t, c = time.perf_counter(), time.process_time()
                perms = weight_matching(spec, sd, b)
                row[f"{key}_s"], row[f"{key}_cpu"] = time.perf_counter() - t, time.process_time() - c
            finally:
                _tree.SHORTCUT_MIN = old
            aligned = ws.permute(b, spec, perms)
            row[f"{key}_exact"] = all(torch.equal(aligned[k], sd[k]) for k in sd if sd[k].is_floating_point())
    return row


def _fmt(row: dict, reference: bool) -> tuple[str, ...]:
    if "error" in row:
        return (row["model"], f"{row.get('params_m', float('nan')):.1f}", row["error"]) + ("",) * (10 + reference)
    ok = lambda v: "exact" if v else "WRONG"  # noqa: E731
    cells = [row["model"], f"{row['params_m']:.1f}", f"{row['trace_s']:.1f}", str(row["groups"]),
             f"{100 * row['in_group']:.0f}%"]
    if "graph_skipped" in row:
        cells += [row["graph_skipped"]] + [""] * 5
    else:
        cells += [f"{row['edges_m']:.1f}", str(row["edge_dim"]), f"{row['graph_s']:.1f} ({row['graph_cpu']:.1f})",
                  f"{row['graph_peak_mb'] / 1024:.2f}", f"{row['padded_gb']:.2f}", ok(row["round_trip"])]
    if "match_s" in row:
        cells += [f"{row['match_s']:.1f} ({row['match_cpu']:.1f})", ok(row["match_exact"])]
    else:
        cells += ["-", "-"]
    if reference:
        ref = f"{row['match_ref_s']:.1f} ({row['match_ref_cpu']:.1f})" if "match_ref_s" in row else "-"
        cells.append(ref + (f", {row['match_ref_cpu'] / row['match_cpu']:.1f}x" if "match_ref_s" in row else ""))
    return tuple(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--reference", action="store_true", help="also time weight matching with scipy for every LAP")
    ap.add_argument("--skip-matching", action="store_true")
    ap.add_argument("--max-graph-weights", type=float, default=400e6,
                    help="skip the graph of larger models (about 35 bytes per weight at peak)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("ROW " + json.dumps(run_one(args.one, not args.skip_matching, args.reference, args.max_graph_weights)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _table import print_table

    rows = []
    for name in args.models:
        cmd = [sys.executable, __file__, "--one", name] + (["--reference"] if args.reference else []) \
            + (["--skip-matching"] if args.skip_matching else []) + ["--max-graph-weights", str(args.max_graph_weights)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")), None)
        row = json.loads(line[4:]) if line else {"model": name, "error": f"crashed: {proc.stderr.strip()[-150:]}"}
        rows.append(_fmt(row, args.reference))
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    header = ("model", "params M", "trace s", "groups", "weights in a group", "edges M", "Fe", "graph s (cpu)",
              "graph peak GB", "padded GB (before)", "round trip", "matching s (cpu)", "recovery")
    print_table(header + (("scipy-only matching s (cpu), cpu ratio",) if args.reference else ()), rows)


if __name__ == "__main__":
    main()
