"""Merge digit classifiers trained from different seeds: align them (Git Re-Basin weight matching),
average them, and measure the barrier on the linear path before and after alignment.

    python examples/merge_models.py                 # two MLPs: barrier table, barrier plot, merged accuracy
    python examples/merge_models.py --n 4           # four MLPs: all aligned to the first, then averaged

Every step is a library call: ``weight_matching`` (align B to A), ``permute`` (apply it),
``barrier_curve`` / ``barrier_table`` / ``plot_barrier`` (the path), ``weighted_average`` (the
merge), ``merge_many`` (MergeMany, aligning all networks jointly, for comparison), ``evaluate``
(test loss and accuracy). Networks are MLPs 64-128-128-10 on scikit-learn's 8x8 digits (embedded,
no download), each initialized and shuffled from its own seed (``torch.random.fork_rng``: the
caller's random state is left alone).

Decisions: the reference for N > 2 is the first network (``--n 2`` is then the same merge as the
two-network case); the barrier table has one naive and one aligned row per pair (reference, i); the
plot draws them all. Writes ``merge_barrier.png`` and ``results.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2, help="number of networks (>= 2; default 2)")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 128, 10], help="MLP widths, input to output")
    p.add_argument("--epochs", type=int, default=30, help="training epochs per network (default 30)")
    p.add_argument("--seed", type=int, default=0, help="first seed; network i uses seed + i")
    p.add_argument("--points", type=int, default=11, help="points on each interpolation path (default 11)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default="out/examples/merge_models")
    args = p.parse_args(argv)
    if args.n < 2:
        p.error("--n must be at least 2")
    if len(args.widths) < 3 or args.widths[0] != 64 or args.widths[-1] != 10:
        p.error("--widths must start with 64 (8x8 pixels), end with 10 (classes) and have a hidden layer")
    return args


def train_models(args, data):
    import torch

    from weightspace.data.digits import train_classifier
    from weightspace.models import mlp

    (x, y), _ = data
    models = []
    for i in range(args.n):
        seed = args.seed + i
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)                      # this network's initialization only
            model = mlp(args.widths)
        models.append(train_classifier(model, x, y, epochs=args.epochs, seed=seed))
    return models


def merged_row(label, model, state, test) -> dict:
    from weightspace.merge import evaluate

    loss, acc = evaluate(model, state, test)
    return {"model": label, "loss": loss, "accuracy": acc}


def main(argv=None) -> int:
    import torch

    from weightspace.align import merge_many, weight_matching
    from weightspace.data.digits import digits
    from weightspace.merge import barrier_curve, barrier_table, plot_barrier, weighted_average
    from weightspace.spec import WeightSpaceSpec
    from weightspace.symmetry import permute

    args = parse(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = digits()
    (x_train, _), test = data
    t0 = time.perf_counter()
    models = train_models(args, data)
    print(f"trained {args.n} MLPs {'-'.join(map(str, args.widths))} on digits (seeds {args.seed}.."
          f"{args.seed + args.n - 1}, {args.epochs} epochs) in {time.perf_counter() - t0:.1f} s")
    model = models[0]
    spec = WeightSpaceSpec.from_module(model, x_train[:2])
    states = [{k: v.detach() for k, v in m.state_dict().items()} for m in models]
    ref = states[0]

    aligned, seconds = [ref], []
    for s in states[1:]:
        t0 = time.perf_counter()
        perms = weight_matching(spec, ref, s)
        seconds.append(time.perf_counter() - t0)
        aligned.append(permute(s, spec, perms))
    print(f"weight matching to network 0: {1000 * statistics.mean(seconds):.0f} ms per network")

    curves, times = [], []
    for i in range(1, args.n):
        pair = f"0-{i}" if args.n > 2 else ""
        curves.append(barrier_curve(model, ref, states[i], test, n=args.points, label=f"naive {pair}".strip()))
        curves.append(barrier_curve(model, ref, aligned[i], test, n=args.points,
                                    label=f"weight matching {pair}".strip()))
        times += [None, seconds[i - 1]]
    print("\nTest loss and accuracy along (1 - alpha) A + alpha B (A = network 0):")
    print(barrier_table(curves, times))

    rows = [merged_row(f"network {i}", model, s, test) for i, s in enumerate(states)]
    rows.append(merged_row(f"average of {args.n}, naive", model, weighted_average(states, spec=spec), test))
    rows.append(merged_row(f"average of {args.n}, aligned to 0", model, weighted_average(aligned, spec=spec), test))
    if args.n > 2:
        t0 = time.perf_counter()
        mm = merge_many(spec, states, seed=args.seed)
        rows.append(merged_row(f"MergeMany of {args.n} ({time.perf_counter() - t0:.1f} s)", model, mm.merged, test))
    individual = [r["accuracy"] for r in rows[:args.n]]
    print(f"\nMerged networks on the {len(test[1])} test images (individual networks: mean "
          f"{100 * statistics.mean(individual):.2f}%, best {100 * max(individual):.2f}%):")
    print(f"{'model':40s} {'loss':>8s} {'accuracy':>9s}")
    for r in rows:
        print(f"{r['model']:40s} {r['loss']:8.4f} {100 * r['accuracy']:8.2f}%")

    title = (f"{args.n} digit MLPs: linear path from network 0, naive and aligned" if args.n > 2
             else "Two digit MLPs: linear path before and after weight matching")
    plot = plot_barrier(curves, out / "merge_barrier.png", title=title)
    summary = {"n": args.n, "widths": args.widths, "epochs": args.epochs, "merged": rows,
               "barriers": [{"label": c.label, "loss_barrier": c.loss_barrier, "accuracy_barrier": c.accuracy_barrier}
                            for c in curves]}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwritten: {plot}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
