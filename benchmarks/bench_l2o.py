"""Learned optimizers on digits MLPs: tuned Adam vs the per-parameter baseline vs equivariant ones.

Meta-trains each learned optimizer on CPU (persistent truncated backpropagation through unrolled
inner training, ``weightspace.optim.meta_train``) on 2-hidden-layer MLPs of the meta-training widths
on the digits training split, then runs every optimizer as a real ``torch.optim.Optimizer`` on
held-out tasks: new initialization seeds at a meta-training width, and a width never seen in
meta-training. Adam's learning rate is tuned on the meta-training tasks (a grid, loss after K steps);
the learned rules' base learning rate starts at that value. Printed: the mean training loss (± std
over 5 seeds) after K inner steps (K = the meta-training horizon) and 5K, and the steps each needs
to reach Adam's mean loss at K (speed-up = Adam's steps / its steps). Writes the curves' PNG and the
meta-loss PNG beside the checkpoints.

Everything is checkpointed under ``--out``: a killed run continues where it stopped when started
again (meta-training resumes from its last checkpoint; finished parts are read back).

    OMP_NUM_THREADS=1 python benchmarks/bench_l2o.py [--quick] [--out out/bench_l2o]
        [--models per-parameter,unf,gmn] [--form scale|add] [--no-step-features] [--meta-steps 1000]

Measured (1,000 meta-steps, per-parameter + UNF + GMN: about 13 minutes of meta-training with one
thread on the shared 2-core machine): see the README's learned-optimizer section.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from weightspace.optim import FeatureConfig, LearnedUpdate
from weightspace.optim.evaluate import adam, evaluate, learned, tune_adam
from weightspace.optim.meta_train import meta_train
from weightspace.optim.plot import plot_curves, plot_meta_losses
from weightspace.optim.tasks import digits_family

MODELS = {"per-parameter": {"hidden": 32, "layers": 2}, "unf": {"channels": (16, 16)}, "nfn": {"channels": (16, 16)},
          "gmn": {"hidden": 32, "layers": 2}}
DEFAULT_MODELS = ("per-parameter", "unf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny run that checks the pipeline (minutes)")
    ap.add_argument("--out", default="out/bench_l2o")
    ap.add_argument("--meta-steps", type=int, default=1000)
    ap.add_argument("--horizon", type=int, default=100, help="K: inner steps per task in meta-training")
    ap.add_argument("--unroll", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, from {sorted(MODELS)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--form", choices=("add", "scale"), default="scale",
                    help="the rule's form: Adam plus a learned term, or Adam with a learned per-entry scale")
    ap.add_argument("--no-step-features", action="store_true",
                    help="leave out the step-count encodings (a stationary rule: nothing is out of range past K)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.meta_steps, args.horizon, args.seeds = 20, 20, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_widths, unseen = (16, 32), 64
    family = digits_family("mlp", train_widths)
    k = args.horizon

    adam_file = out / "adam.json"
    if adam_file.is_file():
        tuned = json.loads(adam_file.read_text())
    else:
        t0 = time.time()
        best, scores = tune_adam(family, k, seeds=(0, 1), width=train_widths[-1])
        tuned = {"lr": best, "scores": {str(a): b for a, b in scores.items()}, "seconds": time.time() - t0}
        adam_file.write_text(json.dumps(tuned, indent=1))
    print(f"Adam's learning rate tuned on meta-training tasks (loss after {k} steps): {tuned['lr']:g}  "
          f"grid {tuned['scores']}")

    features = FeatureConfig(time_scales=()) if args.no_step_features else FeatureConfig()
    rules, meta_losses, timings = {}, {}, {}
    for name in args.models.split(","):
        final = out / f"{name}.safetensors"
        t0 = time.time()
        result = meta_train(family, name, meta_steps=args.meta_steps, unroll_steps=args.unroll, horizon=k,
                            tasks=args.tasks, checkpoint=out / f"{name}.ckpt", every=50, lr=tuned["lr"],
                            features=features, form=args.form, **MODELS[name])
        timings[name] = time.time() - t0
        result.rule.save(final)
        rules[name] = LearnedUpdate.load(final, family.module(train_widths[0])[1])
        meta_losses[name] = result.meta_losses
    plot_meta_losses(meta_losses, out / "meta_loss.png")

    optimizers = {"adam": adam(tuned["lr"]), **{n: learned(r) for n, r in rules.items()}}
    seeds = [10_000 + i for i in range(args.seeds)]               # never used in meta-training
    panels = {}
    for label, width in ((f"held-out seeds, width {train_widths[-1]}", train_widths[-1]),
                         (f"unseen width {unseen}", unseen)):
        t0 = time.time()
        panels[label] = evaluate(family, optimizers, horizon=k, seeds=seeds, width=width, progress=True)
        print(f"\n{label} (MLP 64-w-w-10 on digits, {args.seeds} seeds; evaluation {time.time() - t0:.0f} s)")
        print(panels[label].table())
    torch.save({label: c.curves for label, c in panels.items()}, out / "curves.pt")
    png = plot_curves(panels, out / "l2o_curves.png", title="learned optimizers on digits MLPs")
    print(f"\nmeta-training wall time (this run, {args.threads} thread(s)): "
          + ", ".join(f"{n} {s:.0f} s" for n, s in timings.items()))
    print(f"curves: {png}; meta-loss: {out / 'meta_loss.png'}")
    floors = panels[f"held-out seeds, width {train_widths[-1]}"]
    target = floors.at("adam", k)[0]
    adam_steps = floors.steps_to("adam", target)
    for name in rules:
        if name == "per-parameter" or "per-parameter" not in rules:
            continue
        beats = floors.at(name, k)[0] < floors.at("per-parameter", k)[0]
        n = floors.steps_to(name, target)
        print(f"floor: {name} beats per-parameter at K: {beats}; reaches Adam's loss at K in {n} steps: fewer than "
              f"K = {k}: {n is not None and n < k}; fewer than Adam's mean curve ({adam_steps}): "
              f"{n is not None and adam_steps is not None and n < adam_steps}")


if __name__ == "__main__":
    main()
