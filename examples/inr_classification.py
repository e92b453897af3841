"""Classify INRs by the class of the image they represent: every metanetwork of weightspace on one
zoo, a test-accuracy table (mean and spread over seeds), a bar chart.

    python examples/inr_classification.py                                   # digits INRs, built if absent
    python examples/inr_classification.py --zoo datasets/mnist-inr --task mnist-inr --epochs 20
    python examples/inr_classification.py --models flat-mlp nggnn --seeds 0 1 2 --train-size 2000

Each (model, seed) is one ``weightspace train`` run under ``--out/runs``: a finished run is read back,
an interrupted one resumes, so rerunning the command after a kill continues where it stopped.
Writes ``results.md``, ``results.csv`` and ``results.png`` under ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

MODELS = ["flat-mlp", "nfn-np", "nfn-hnp", "unf", "nggnn", "ngt", "gmn", "scalegmn"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default="out/examples/digits-inr", help="INR zoo folder (digits zoo built when absent)")
    p.add_argument("--task", default="digits-inr", help="digits-inr, mnist-inr, fashion-mnist-inr, inr-classification")
    p.add_argument("--models", nargs="+", default=MODELS, help=f"metanetworks (default: {' '.join(MODELS)})")
    p.add_argument("--model-options", default="{}", help='JSON {"model": {options}} per model name')
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-size", type=int, help="only the first N training INRs")
    p.add_argument("--augment", action="append", default=[], help="augmentation names (see weightspace train --help)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default="out/examples/inr_classification")
    return p.parse_args(argv)


def run_one(args, model: str, seed: int, options: dict) -> dict:
    from weightspace.train import TrainConfig, train

    run = Path(args.out) / "runs" / f"{model}-seed{seed}"
    if (run / "metrics.json").is_file():
        return json.loads((run / "metrics.json").read_text())
    config = TrainConfig(task=args.task, zoo=args.zoo, model=model, model_options=options.get(model, {}),
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                         train_size=args.train_size, augment=tuple(args.augment))
    return train(config, run, resume=(run / "config.json").is_file())


def table(rows: list[dict]) -> str:
    lines = ["| model | parameters | test accuracy (%) | seeds | train s / run |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['mean']:.2f} +- {r['std']:.2f} | {r['n']} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.8))
    ax = fig.subplots()
    names = [r["model"].replace(" + ", "\n+ ") for r in rows]
    ax.bar(names, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], capsize=4, color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(i, r["mean"] + r["std"] + 1, f"{r['mean']:.1f}", ha="center", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    import torch

    from weightspace.commands.train import parse_options

    args = parse(argv)
    torch.set_num_threads(args.threads)
    options = parse_options(args.model_options)
    if not (Path(args.zoo) / "manifest.json").is_file() and args.task == "digits-inr":
        from weightspace.cli import main as cli
        print(f"building the digits INR zoo in {args.zoo} (about 20 s)")
        cli(["fit-inrs", "--source", "digits", "--out", args.zoo, "--workers", "1"])
    rows = []
    for model in args.models:
        results = [run_one(args, model, seed, options) for seed in args.seeds]
        accs = [100 * r["test"]["accuracy"] for r in results]
        label = model + (f" + {options[model]['probe']} probes" if options.get(model, {}).get("probe") else "")
        rows.append({"model": label, "parameters": results[0]["parameters"], "mean": statistics.mean(accs),
                     "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "n": len(accs),
                     "seconds": statistics.mean(r["train_seconds"] for r in results)})
        print(f"{model}: {rows[-1]['mean']:.2f} +- {rows[-1]['std']:.2f} % test accuracy", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = table(rows)
    header = (f"INR classification on {args.zoo} ({args.task}), {args.epochs} epochs, batch {args.batch_size}, "
              f"lr {args.lr}, seeds {args.seeds}" + (f", {args.train_size} training INRs" if args.train_size else ""))
    (out / "results.md").write_text(header + "\n\n" + md + "\n")
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "results.png", f"{args.task}: test accuracy over seeds {args.seeds}, {args.epochs} epochs")
    print("\n" + header + "\n\n" + md)
    print(f"\nwritten: {out / 'results.md'}, {out / 'results.csv'}, {out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
