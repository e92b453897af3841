"""Meta-train learned optimizers on digits classifiers and compare them with tuned Adam.

    python examples/learned_optimizer.py                      # MLPs, per-parameter vs UNF, a few minutes
    python examples/learned_optimizer.py --kind cnn --models unf,gmn

Every step is a library call: ``tune_adam`` (Adam's learning rate from a grid, on meta-training
tasks), ``meta_train`` (truncated backpropagation through unrolled inner training, checkpointed and
resumable), ``LearnedUpdate.save`` / ``LearnedOptimizer.from_pretrained`` (the trained optimizer as a
file), ``evaluate`` (a real ``torch.optim`` run per optimizer and held-out seed, at a meta-training
width and at a width never seen) and ``plot_curves`` / ``plot_meta_losses``.

Decisions: the learned rules start as Adam at the tuned learning rate plus a small metanetwork term
(``weightspace.optim.rule``), so what meta-training learns is the correction; held-out seeds are
disjoint from every seed meta-training uses. Writes ``curves.png``, ``meta_loss.png``,
``results.md`` and the trained rules (``<model>.safetensors``) under ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=("mlp", "cnn"), default="mlp", help="task architecture (default mlp)")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32], help="meta-training widths")
    p.add_argument("--unseen", type=int, default=48, help="a width held out of meta-training")
    p.add_argument("--models", default="per-parameter,unf", help="meta-models, comma-separated")
    p.add_argument("--meta-steps", type=int, default=300)
    p.add_argument("--horizon", type=int, default=50, help="K: inner steps per meta-training task")
    p.add_argument("--unroll", type=int, default=10, help="inner steps per truncation")
    p.add_argument("--seeds", type=int, default=3, help="held-out seeds per evaluation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="out/examples/learned_optimizer")
    args = p.parse_args(argv)
    if args.horizon < args.unroll:
        p.error("--horizon must be at least --unroll")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    import torch

    from weightspace.optim import LearnedOptimizer
    from weightspace.optim.evaluate import adam, evaluate, tune_adam
    from weightspace.optim.meta_train import meta_train
    from weightspace.optim.plot import plot_curves, plot_meta_losses
    from weightspace.optim.tasks import digits_family

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    family = digits_family(args.kind, args.widths)
    k = args.horizon
    lr, grid = tune_adam(family, k, width=args.widths[-1])
    print(f"tuned Adam: lr {lr:g} (loss after {k} steps: " + ", ".join(f"{a:g}: {b:.3f}" for a, b in grid.items())
          + ")")
    files, meta_losses = {}, {}
    for name in args.models.split(","):
        result = meta_train(family, name, meta_steps=args.meta_steps, unroll_steps=args.unroll, horizon=k,
                            checkpoint=out / f"{name}.ckpt", lr=lr)
        files[name] = result.rule.save(out / f"{name}.safetensors")
        meta_losses[name] = result.meta_losses

    def from_file(path):
        return lambda module, spec: LearnedOptimizer.from_pretrained(path, module, spec)

    optimizers = {"adam": adam(lr), **{n: from_file(p) for n, p in files.items()}}
    seeds = [10_000 + i for i in range(args.seeds)]
    panels, lines = {}, []
    for label, width in ((f"held-out seeds, width {args.widths[-1]}", args.widths[-1]),
                         (f"unseen width {args.unseen}", args.unseen)):
        panels[label] = evaluate(family, optimizers, horizon=k, seeds=seeds, width=width)
        lines += [f"## {label}", "", "```", panels[label].table(), "```", ""]
        print(f"\n{label}\n{panels[label].table()}")
    plot_curves(panels, out / "curves.png", title=f"learned optimizers on digits {args.kind.upper()}s")
    plot_meta_losses(meta_losses, out / "meta_loss.png", window=max(1, args.meta_steps // 20))
    (out / "results.md").write_text("\n".join(lines))
    print(f"\nwrote {out / 'curves.png'}, {out / 'meta_loss.png'}, {out / 'results.md'}")
    return {"adam_lr": lr, "panels": panels, "files": files}


if __name__ == "__main__":
    sys.exit(main() and 0)
