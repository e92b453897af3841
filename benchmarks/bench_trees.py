"""Linear mode connectivity of soft tree ensembles (Kanoh & Sugiyama, ICLR 2025), one table.

For each tabular data set (scikit-learn's breast cancer, wine, digits, iris, a ``make_classification``
set, and any CSV passed with ``--csv``: numeric features, the class in the last column) and each
model kind (perfect, oblivious, decision list, modified decision list soft tree ensembles of
``--trees`` trees of depth ``--depth``, and a ReLU MLP with two hidden layers of about the same
number of parameters), ``--pairs`` pairs of models are trained from different seeds (Adam, full
batch). For every pair the test-accuracy barrier at the midpoint,
``(acc(A) + acc(B)) / 2 - acc((A + B') / 2)`` in percentage points, is measured for B' = B (naive),
B aligned by tree permutation only, and B aligned with all invariances (tree permutation, subtree
flips, splitting order), with weight matching (WM) and activation matching (AM, on the training
inputs); the MLP has neuron permutations only (its "perm" and "all" are the same search).
Cells: mean +- standard deviation over the pairs. ``WM time``: median time of the all-invariance
weight matching, with the permutation-only matching of the same pair as the in-run reference
(``ratio``).

Floors checked at the end: all invariances give a lower mean WM barrier than permutation only
for perfect and oblivious trees (averaged over the data sets), and weight matching of 256 depth-2
trees takes under 2 s.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_trees.py`` (about 15 minutes on one thread);
``--quick`` for a one-minute smoke run.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import weightspace as ws
from weightspace.align import tree_activation_matching
from weightspace.models import SoftTreeEnsemble, mlp

from _table import print_table

TREE_KINDS = ("perfect", "oblivious", "decision_list", "modified_decision_list")


def load_sets(names, csvs, seed):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    out = {}
    for name in names:
        if name == "make_classification":
            x, y = datasets.make_classification(n_samples=1000, n_features=20, n_informative=8, n_classes=3,
                                                flip_y=0.05, class_sep=0.8, random_state=seed)
        else:
            x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        out[name] = (x, y)
    for path in csvs:
        data = np.loadtxt(path, delimiter=",", skiprows=1)
        _, y = np.unique(data[:, -1], return_inverse=True)
        out[path] = (data[:, :-1], y)
    split = {}
    for name, (x, y) in out.items():
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
        split[name] = tuple(torch.as_tensor(v, dtype=torch.float32) if i % 2 == 0 else torch.as_tensor(v)
                            for i, v in enumerate(((xtr - mu) / sd, ytr, (xte - mu) / sd, yte)))
    return split


def mlp_width(features, classes, params):
    """Hidden width h of features -> h -> h -> classes with about ``params`` parameters."""
    a, b, c = 1, features + classes + 2, classes - params
    return max(2, int((-b + (b * b - 4 * a * c) ** 0.5) / 2))


def build(kind, features, classes, args, seed):
    gen = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        tree_params = sum(p.numel() for p in SoftTreeEnsemble(features, classes, args.trees, args.depth).parameters())
        h = mlp_width(features, classes, tree_params)
        torch.manual_seed(seed)  # nn.Linear draws from the global generator: benchmark script only
        return mlp([features, h, h, classes])
    return SoftTreeEnsemble(features, classes, args.trees, args.depth, kind, generator=gen)


def train(model, x, y, steps, lr, seed):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def accuracy(model, state, x, y):
    with torch.no_grad():
        out = torch.func.functional_call(model, state, (x,))
    return 100.0 * float((out.argmax(-1) == y).float().mean())


def barrier(model, a, b, x, y):
    mid = {k: 0.5 * (a[k] + b[k]) for k in a}
    return 0.5 * (accuracy(model, a, x, y) + accuracy(model, b, x, y)) - accuracy(model, mid, x, y)


def run_pair(kind, model, spec, a, b, data):
    xtr, _, xte, yte = data
    res, times = {"naive": barrier(model, a, b, xte, yte)}, {}
    for label, kinds in (("perm", ("permutation",)), ("all", None)):
        if kind == "mlp" and label == "all":
            res["WM all"], res["AM all"] = res["WM perm"], res["AM perm"]
            continue
        t0 = time.perf_counter()
        g = ws.weight_matching(spec, a, b, kinds=kinds) if kind != "mlp" else ws.weight_matching(spec, a, b)
        times[label] = time.perf_counter() - t0
        res[f"WM {label}"] = barrier(model, a, ws.act(b, spec, g), xte, yte)
        if kind == "mlp":
            g = ws.activation_matching(spec, a, b, xtr, model=model)
        else:
            g = tree_activation_matching(spec, a, b, xtr, kinds=kinds)
        res[f"AM {label}"] = barrier(model, a, ws.act(b, spec, g), xte, yte)
    return res, times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", default="breast_cancer,wine,digits,iris,make_classification")
    p.add_argument("--csv", action="append", default=[], help="a CSV with a header row, class in the last column")
    p.add_argument("--kinds", default=",".join((*TREE_KINDS, "mlp")))
    p.add_argument("--trees", type=int, default=256)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.sets, args.pairs, args.steps, args.trees = "iris,wine", 2, 100, 64
    sets = load_sets([s for s in args.sets.split(",") if s], args.csv, args.seed)
    kinds = args.kinds.split(",")
    cols = ("naive", "WM perm", "WM all", "AM perm", "AM all")
    rows, summary, wm_times, start = [], {}, [], time.perf_counter()
    for name, data in sets.items():
        xtr, ytr, xte, yte = data
        f, c = xtr.shape[1], int(ytr.max()) + 1
        for kind in kinds:
            model = build(kind, f, c, args, 0)
            spec = ws.WeightSpaceSpec.from_module(model, xtr[:4])
            results, times, accs = {k: [] for k in cols}, {"perm": [], "all": []}, []
            for pair in range(args.pairs):
                states = []
                for s in (2 * pair, 2 * pair + 1):
                    m = build(kind, f, c, args, args.seed * 1000 + s)
                    states.append(train(m, xtr, ytr, args.steps, args.lr, s))
                    accs.append(accuracy(model, states[-1], xte, yte))
                res, t = run_pair(kind, model, spec, *states, (xtr, ytr, xte, yte))
                for k in cols:
                    results[k].append(res[k])
                for k, v in t.items():
                    times[k].append(v)
            summary[(name, kind)] = {k: statistics.mean(v) for k, v in results.items()}
            cells = [f"{statistics.mean(v):.2f} ± {statistics.pstdev(v):.2f}" for v in results.values()]
            t_all = statistics.median(times["all"] or times["perm"])
            t_perm = statistics.median(times["perm"])
            if kind != "mlp" and args.trees == 256 and args.depth == 2:
                wm_times.append(t_all)
            rows.append((name, kind, f"{statistics.mean(accs):.1f}", *cells, f"{1000 * t_all:.1f} ms",
                         f"{t_all / t_perm:.1f}x"))
            print(f"[{time.perf_counter() - start:6.0f} s] {name} {kind}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in summary[(name, kind)].items()), flush=True)
    print(f"\n{args.pairs} seed pairs per cell, {args.trees} trees of depth {args.depth}, {args.steps} Adam steps; "
          f"barrier = test-accuracy drop at the midpoint, percentage points (mean ± std over pairs)")
    print_table(("data", "model", "test acc", *cols, "WM time", "ratio (vs perm only)"), rows)
    print("\nfloors:")
    for kind in ("perfect", "oblivious"):
        vals = [v for (n, k), v in summary.items() if k == kind]
        if vals:
            perm, full = statistics.mean(v["WM perm"] for v in vals), statistics.mean(v["WM all"] for v in vals)
            print(f"  {kind}: WM all invariances {full:.2f} < permutation only {perm:.2f}: "
                  f"{'PASS' if full < perm else 'FAIL'}")
    if wm_times:
        worst = max(wm_times)
        print(f"  weight matching of 256 depth-2 trees: slowest median {worst:.3f} s < 2 s: "
              f"{'PASS' if worst < 2 else 'FAIL'}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
