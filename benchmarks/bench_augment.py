"""Weight-space augmentation: the cost of each transform, and an ablation on an INR zoo.

(1) Timing: each transform of ``weightspace.augment`` on one batch of 1,024 SIRENs 2-32-32-1 (the
digits zoo's INRs); ms per batch (median of repeats, after a warm-up). Floor of the issue: < 50 ms
per batched transform. ``WeightMixup(align="match")`` runs one ``ws.weight_matching`` per network
and is timed apart from the floor.

(2) Ablation: INR classification on the digits-INR zoo (1,797 SIRENs of scikit-learn's digits,
70/10/20% split; fitted here in ~10 s when no zoo folder exists), on the same digits fitted from one
shared initialization (where entry-by-entry comparisons of weights carry signal), and on MNIST-INR
when ``--root`` is given (the first ``--mnist-limit`` train and test images). One classifier per row
and seed, with no augmentation, each family alone and all combined; test accuracy mean +- std over
the seeds and the train/test gap (accuracy on the un-augmented training set minus test accuracy).
The classifier is a model factory ``factory(spec, num_classes) -> module(WeightSpace) -> logits``
picked with ``--model``: ``flat-mlp`` (``weightspace.nn.FlatMLP``, an MLP on the flattened weights,
the baseline of DWSNets / NFN tables), ``unf`` (``weightspace.nn.UNF``, equivariant layers) or
``nfn-np`` (NFN's NP layers with IO embeddings), ``nggnn`` (a graph metanetwork, ``weightspace.nn.NGGNN``),
or ``nggnn-probe`` / ``gmn-probe`` (graph metanetworks with 64 probe features, hidden 32, 2 layers:
the digits-INR reproduction's setting, the models that learn this zoo), or ``unf-probe`` (equivariant
layers, 2 x 32 channels, reading the same 64 probe features as input channels: ``UNF(..., probe=64)``).
Augmentations act on the raw weights; per-tensor normalization (training-split statistics) follows
inside the model (probe features are computed from the raw, augmented weights).
Training runs on one thread by default (robust on a shared 2-core machine; ``--threads``).

Run: ``python benchmarks/bench_augment.py`` (about 7 min on a 2-core machine; ``--quick`` for a
smoke run; ``--no-match`` skips the mixup rows with weight matching, one ``weight_matching`` per
network and step, about 35 s a seed, the slowest rows).
Writes ``out/bench/bench_augment.{md,csv,png}``.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from _table import print_table
from tqdm.auto import tqdm

import weightspace as ws
from weightspace import augment as A
from weightspace.nn import NFN, UNF, FlatMLP

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ models


def _flat_mlp(spec: ws.WeightSpaceSpec, num_classes: int) -> nn.Module:
    return FlatMLP(spec, (256, 256), num_classes, dropout=0.1)


def _unf(spec: ws.WeightSpaceSpec, num_classes: int) -> nn.Module:
    return UNF(spec, channels=(16, 16), out_features=num_classes)


def _nfn_np(spec: ws.WeightSpaceSpec, num_classes: int) -> nn.Module:
    return NFN(spec, channels=(16, 16), out_features=num_classes, mode="np", io_embed=True)


def _nggnn(spec: ws.WeightSpaceSpec, num_classes: int) -> nn.Module:
    from weightspace.nn import NGGNN

    model = NGGNN(hidden=32, layers=3, out_features=num_classes)
    probe = ws.WeightSpace(spec, {p.name: torch.zeros(1, *p.shape) for p in spec.params})
    model(probe)                       # input widths are inferred on the first batch: before the optimizer
    return model


class _Normalized(nn.Module):
    """A classifier on normalized weights, fed raw weights (the per-tensor statistics of the
    training split applied first)."""

    def __init__(self, model: nn.Module, norm):
        super().__init__()
        self.model, self.norm = model, norm

    def forward(self, w: ws.WeightSpace) -> torch.Tensor:
        return self.model(self.norm.apply(w))


GRAPH_SIZE = {"hidden": 32, "layers": 2, "probe": 64}     # --graph-size overrides


def _probed(name: str):
    """A graph metanetwork with Neural Graphs' probe features (``probe`` points of the pixel grid,
    computed from the raw, augmented weights), as in the digits-INR reproduction: hidden 32, 2
    layers, 64 probes unless ``--graph-size`` says otherwise."""
    def factory(spec, num_classes, norm, zoo):
        from weightspace.train.data import zoo_evaluator
        from weightspace.train.models import build_model

        return build_model(name, spec, num_classes, norm, torch.Generator().manual_seed(torch.initial_seed()),
                           zoo_evaluator(zoo.manifest), **GRAPH_SIZE)
    return factory


UNF_PROBE = {"channels": (32, 32), "probe": 64}


def _unf_probed(spec, num_classes, norm, zoo):
    """UNF with the same probe features as the graph metanetworks (``UNF(..., probe=64)``: each entry's
    channels carry the values of the neurons it connects on 64 pixel-grid probes), 2 x 32 channels."""
    from weightspace.train.data import zoo_evaluator
    from weightspace.train.models import build_model

    return build_model("unf", spec, num_classes, norm, torch.Generator().manual_seed(torch.initial_seed()),
                       zoo_evaluator(zoo.manifest), **UNF_PROBE)


def _on_normalized(factory):
    return lambda spec, num_classes, norm, zoo: _Normalized(factory(spec, num_classes), norm)


# name -> factory(spec, num_classes, norm, zoo) -> module(raw WeightSpace) -> logits
MODELS = {"flat-mlp": _on_normalized(_flat_mlp), "unf": _on_normalized(_unf), "nfn-np": _on_normalized(_nfn_np),
          "nggnn": _on_normalized(_nggnn), "nggnn-probe": _probed("nggnn"), "gmn-probe": _probed("gmn"),
          "unf-probe": _unf_probed}


# ------------------------------------------------------------------------------------ the rows


def families(match: bool) -> dict[str, tuple[A.Transform | None, A.WeightMixup | None]]:
    """Ablation rows: name -> (transform, mixup)."""
    symmetry = A.Compose([A.RandomPermutation(), A.RandomSignFlip()])
    noise = A.Compose([A.RandomApply(A.GaussianNoise((0.0, 0.1)), 0.5), A.RandomApply(A.WeightDropout((0.0, 0.1)), 0.5),
                       A.RandomApply(A.MagnitudeMasking((0.0, 0.2)), 0.5)])
    geometry = A.Compose([A.INRRotate(15.0), A.INRTranslate(0.15), A.INRScale((0.9, 1.1))])
    rows = {"none": (None, None), "symmetry (permutation + sign flip)": (symmetry, None),
            "noise (gaussian, dropout, masking)": (noise, None),
            "INR geometry (rotate, translate, scale)": (geometry, None),
            "mixup (align=none)": (None, A.WeightMixup(0.2, "none")),
            "mixup (align=permute)": (None, A.WeightMixup(0.2, "permute"))}
    # function-reading models (probe features) see every non-symmetry change as a new image: a mild row
    mild = A.RandomApply(A.GaussianNoise((0.0, 0.01)), 0.5)
    rows["mild noise (gaussian 1%)"] = (mild, None)
    rows["symmetry + mild noise"] = (A.Compose([symmetry, mild]), None)
    if match:
        rows["mixup (align=match)"] = (None, A.WeightMixup(0.2, "match"))
    rows["all combined (mixup align=permute)"] = (A.Compose([symmetry, geometry, noise]), A.WeightMixup(0.2, "permute"))
    # for models that are not invariant (flat-mlp): everything but the symmetry family
    rows["all but symmetry (mixup align=none)"] = (A.Compose([geometry, noise]), A.WeightMixup(0.2, "none"))
    return rows


# ------------------------------------------------------------------------------------ data


def digits_zoo(path: str | None) -> ws.data.datasets.Zoo:
    from weightspace.data.recipes import make_inr_zoo

    if path is None:
        standard = REPO / "datasets" / "digits-inr"
        path = standard if (standard / "manifest.json").exists() else REPO / "out" / "bench" / "zoos" / "digits-inr"
    try:
        return ws.load_zoo(path)
    except Exception:                     # missing or incomplete: fit (resumes an interrupted build)
        make_inr_zoo("digits-inr", path, workers=2)
        return ws.load_zoo(path)


def shared_init_zoo(zoo) -> ws.data.datasets.Zoo:
    """The same digits, labels and splits, every INR fitted from one shared initialization
    (``fit_inrs(indices=[0] * N)``): the INRs stay near one point of weight space, so their weights
    are comparable entry by entry and a flat MLP has signal (~5 s)."""
    from weightspace.data.datasets import Zoo

    images, labels = ws.load_images("digits")
    if not torch.equal(labels, zoo.records["label"].long()):
        raise RuntimeError("the digits zoo's labels are not the digits in order")
    fit = ws.fit_inrs(images, indices=[0] * len(images), workers=2, progress="INR zoo, shared init")
    return Zoo(zoo.path, {**zoo.manifest, "init": "shared"}, fit.weights, dict(zoo.records), dict(zoo.splits))


def _limit(zoo, n: int | None):
    """The zoo with its training split cut to its first ``n`` networks (validation and test unchanged)."""
    if n is None:
        return zoo
    from weightspace.data.datasets import Zoo

    splits = {**zoo.splits, "train": zoo.splits["train"][:n]}
    return Zoo(zoo.path, {**zoo.manifest, "train_size": n}, zoo.weights, dict(zoo.records), splits)


def mnist_zoo(root: str, limit: int) -> ws.data.datasets.Zoo:
    from weightspace.data.recipes import make_inr_zoo

    path = REPO / "out" / "bench" / "zoos" / f"mnist-inr-{limit}"
    try:
        return ws.load_zoo(path)
    except Exception:
        make_inr_zoo("mnist-inr", path, root=root, limit=limit, workers=2)
        return ws.load_zoo(path)


# ------------------------------------------------------------------------------------ training


def run_one(factory, zoo, transform, mixup, seed: int, epochs: int, batch_size: int, lr: float, bar) -> dict:
    """Train one classifier; returns train / test accuracy (un-augmented train set). Model init and
    dropout draw from torch's global generator, seeded here inside ``fork_rng`` (restored after);
    shuffling and augmentation from an explicit generator."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _train(factory, zoo, transform, mixup, seed, epochs, batch_size, lr, bar)


def _train(factory, zoo, transform, mixup, seed, epochs, batch_size, lr, bar) -> dict:
    weights, labels = zoo.weights, zoo.records["label"].long()
    train, test = zoo.splits["train"], zoo.splits["test"]
    norm = ws.normalization_stats(weights[train])
    model = factory(weights.spec, int(labels.max()) + 1, norm, zoo)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-len(train) // batch_size))
    gen = torch.Generator().manual_seed(10_000 + seed)           # shuffling and augmentation
    for _ in range(epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=gen)]
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            w, y = weights[idx], labels[idx]
            if transform is not None:
                w = transform(w, gen)
            if mixup is not None:
                w, lam, partner = mixup(w, gen)
                out = model(w)
                loss = (lam * F.cross_entropy(out, y, reduction="none")
                        + (1 - lam) * F.cross_entropy(out, y[partner], reduction="none")).mean()
            else:
                loss = F.cross_entropy(model(w), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        bar.update(1)
    model.eval()
    with torch.no_grad():
        return {name: float((model(weights[split]).argmax(1) == labels[split]).float().mean())
                for name, split in (("train", train), ("test", test))}


def ablation(zoo, name: str, args, match: bool) -> list[dict]:
    rows = families(match)
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",")]
        rows = {k: v for k, v in rows.items() if k == "none" or any(k.startswith(w) for w in wanted)}
    factory = MODELS[args.model]
    results = []
    bar = tqdm(total=len(rows) * args.seeds * args.epochs, desc=f"ablation {name}", unit="epoch", dynamic_ncols=True)
    for row, (transform, mixup) in rows.items():
        runs = []
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            runs.append(run_one(factory, zoo, transform, mixup, seed, args.epochs, args.batch_size, args.lr, bar))
            bar.set_postfix_str(f"{row[:24]}: test {100 * runs[-1]['test']:.1f}%")
        test = [100 * r["test"] for r in runs]
        gap = [100 * (r["train"] - r["test"]) for r in runs]
        results.append({"zoo": name, "augmentation": row, "test_mean": statistics.mean(test),
                        "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
                        "train_mean": statistics.mean(100 * r["train"] for r in runs),
                        "gap_mean": statistics.mean(gap), "gap_std": statistics.stdev(gap) if len(gap) > 1 else 0.0,
                        "seeds": len(runs), "seconds": time.perf_counter() - t0,
                        "chance": 100.0 / (int(zoo.records["label"].max()) + 1)})
    bar.close()
    return results


# ------------------------------------------------------------------------------------ timing


def timing(weights: ws.WeightSpace, repeat: int, match_networks: int) -> list[tuple[str, ...]]:
    n = weights.batch_size
    geometry = [A.INRRotate(15.0), A.INRTranslate(0.1), A.INRScale((0.8, 1.25))]
    noise = [A.GaussianNoise(0.05), A.WeightDropout(0.1), A.MagnitudeMasking(0.1)]
    cases = [("RandomPermutation()", A.RandomPermutation()), ("RandomSignFlip()", A.RandomSignFlip()),
             *((repr(t).split("(")[0] + "()", t) for t in noise + geometry),
             ("RandomApply(GaussianNoise(), p=0.5)", A.RandomApply(A.GaussianNoise(0.05), 0.5)),
             ("Compose(all eight above)", A.Compose([A.RandomPermutation(), A.RandomSignFlip(), *noise, *geometry])),
             ("WeightMixup(align=none)", A.WeightMixup(0.2, "none")),
             ("WeightMixup(align=permute)", A.WeightMixup(0.2, "permute"))]
    relu = ws.WeightSpaceSpec.mlp([2, 32, 32, 1])
    relu_w = ws.WeightSpace(relu, {p.name: torch.randn(n, *p.shape, generator=torch.Generator().manual_seed(0))
                                   for p in relu.params})
    rows = []
    gen = torch.Generator().manual_seed(0)

    def measure(label, t, w, reps, floor=True):
        t(w, gen)                                                   # warm-up (index plans, caches)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            t(w, gen)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append((label, f"{w.batch_size:,}", f"{1000 * med:.2f}", f"{1000 * min(times):.2f}",
                     f"{1e6 * med / w.batch_size:.1f}", ("yes" if med < 0.05 else "NO") if floor else "(loop)"))

    for label, t in tqdm(cases, desc="timing", unit="transform", dynamic_ncols=True):
        measure(label, t, weights, repeat)
    measure("RandomScaling() (ReLU MLP 2-32-32-1)", A.RandomScaling(), relu_w, repeat)
    if match_networks:
        measure("WeightMixup(align=match), one weight_matching per network", A.WeightMixup(0.2, "match"),
                weights[:match_networks], 1, floor=False)
    return rows


# ------------------------------------------------------------------------------------ output


def write_outputs(results: list[dict], out: Path, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench_augment.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    lines = [f"model `{args.model}`, {args.seeds} seeds, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}",
             "", "| zoo | augmentation | test acc % (mean +- std) | train acc % | train-test gap (pts) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['zoo']} | {r['augmentation']} | {r['test_mean']:.2f} +- {r['test_std']:.2f} | "
              f"{r['train_mean']:.2f} | {r['gap_mean']:.2f} +- {r['gap_std']:.2f} |" for r in results]
    (out / "bench_augment.md").write_text("\n".join(lines) + "\n")
    plot(results, out / "bench_augment.png", args.model)


def plot(results: list[dict], path: Path, model: str = "flat-mlp") -> None:
    """Grouped horizontal bars: one group per augmentation row, one bar per zoo (test accuracy, mean +-
    std), a tick at the un-augmented training accuracy, chance level dashed."""
    from matplotlib.figure import Figure          # no pyplot: no backend or global state touched

    zoos = list(dict.fromkeys(r["zoo"] for r in results))
    rows = list(dict.fromkeys(r["augmentation"] for r in results))
    colors = ["#4c72b0", "#55a868", "#c44e52", "#8172b2"]
    height = 0.8 / len(zoos)
    fig = Figure(figsize=(9, 1.8 + 0.32 * len(rows) * len(zoos)))
    ax = fig.subplots()
    for z, zoo in enumerate(zoos):
        by_row = {r["augmentation"]: r for r in results if r["zoo"] == zoo}
        ys = [len(rows) - 1 - i + 0.4 - (z + 0.5) * height for i, name in enumerate(rows) if name in by_row]
        rs = [by_row[name] for name in rows if name in by_row]
        ax.barh(ys, [r["test_mean"] for r in rs], height=height * 0.9, xerr=[r["test_std"] for r in rs],
                color=colors[z % len(colors)], capsize=2, label=f"{zoo}: test")
        ax.scatter([r["train_mean"] for r in rs], ys, color="black", marker="|", s=120, zorder=3,
                   label="train accuracy (un-augmented)" if z == 0 else None)
    ax.axvline(10.0, color="gray", linestyle="--", linewidth=1, label="chance (10 classes)")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows[::-1], fontsize=8)
    ax.set_xlim(0, 102)
    ax.set_xlabel("accuracy (%), mean +- std over seeds")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.4, -0.22), ncol=2, frameon=False)
    ax.set_title(f"Weight-space augmentation ablation: INR classification, model {model}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")        # the legend below the axes included


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2 epochs, few repeats")
    ap.add_argument("--zoo", default=None, help="digits-INR zoo folder (default: datasets/digits-inr, else built)")
    ap.add_argument("--root", default=None, help="MNIST IDX folder (e.g. ../shared/data/mnist): adds MNIST-INR")
    ap.add_argument("--mnist-limit", type=int, default=1000, help="first N train and N test MNIST images")
    ap.add_argument("--model", default="flat-mlp", choices=sorted(MODELS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", default=None, help="comma-separated prefixes of the rows to run (e.g. "
                    "'symmetry,noise,INR geometry,mixup (align=none),all combined'); 'none' always runs")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--no-match", action="store_true", help="skip the mixup row with weight matching (~35 s a seed)")
    ap.add_argument("--repeat", type=int, default=9, help="timing repeats")
    ap.add_argument("--match-networks", type=int, default=1024, help="networks for timing align=match (0: skip)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (1: robust on shared cores)")
    ap.add_argument("--timing-threads", type=int, default=1)
    ap.add_argument("--no-shared-init", action="store_true", help="skip the shared-initialization digits zoo")
    ap.add_argument("--no-digits", action="store_true", help="skip the (independently initialized) digits zoo")
    ap.add_argument("--train-size", type=int, default=None,
                    help="train on the first N networks of the training split (small zoos: where augmentation matters)")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--graph-size", default=None, metavar="HIDDEN,LAYERS,PROBE",
                    help="gmn-probe / nggnn-probe size (default 32,2,64)")
    ap.add_argument("--out", default=str(REPO / "out" / "bench"))
    args = ap.parse_args()
    if args.graph_size:
        GRAPH_SIZE.update(zip(("hidden", "layers", "probe"), (int(v) for v in args.graph_size.split(","))))
    if args.quick:
        args.seeds, args.epochs, args.repeat, args.match_networks = 2, 2, 2, 32

    zoo = digits_zoo(args.zoo)
    print(f"digits-INR zoo: {len(zoo)} SIRENs, splits {', '.join(f'{k} {len(v)}' for k, v in zoo.splits.items())}")
    if not args.skip_timing:
        torch.set_num_threads(args.timing_threads)
        weights = zoo.weights[: min(1024, len(zoo))]
        rows = timing(weights, args.repeat, min(args.match_networks, weights.batch_size))
        print(f"\n(1) per-batch cost on {weights.batch_size:,} SIRENs 2-32-32-1 (median of {args.repeat} after a "
              f"warm-up, {args.timing_threads} thread)")
        print_table(("transform", "networks", "ms / batch (median)", "ms (min)", "us / network", "< 50 ms"), rows)
    torch.set_num_threads(args.threads)

    results = [] if args.no_digits else ablation(_limit(zoo, args.train_size), "digits-INR", args,
                                                  match=not args.no_match)
    if not args.no_shared_init:       # INRs from one initialization need no matching: no match row
        results += ablation(_limit(shared_init_zoo(zoo), args.train_size), "digits-INR, shared init", args,
                            match=False)
    if args.root:
        name = f"MNIST-INR ({args.mnist_limit}+{args.mnist_limit})"
        results += ablation(mnist_zoo(args.root, args.mnist_limit), name, args, match=not args.no_match)
    print(f"\n(2) ablation: model {args.model}, {args.seeds} seeds x {args.epochs} epochs, test accuracy mean +- std "
          f"(chance: 10%)")
    print_table(("zoo", "augmentation", "test acc %", "train acc %", "train-test gap (pts)", "s / seed"),
                [(r["zoo"], r["augmentation"], f"{r['test_mean']:.2f} +- {r['test_std']:.2f}", f"{r['train_mean']:.2f}",
                  f"{r['gap_mean']:.2f} +- {r['gap_std']:.2f}", f"{r['seconds'] / r['seeds']:.1f}") for r in results])
    for zoo_name in dict.fromkeys(r["zoo"] for r in results):
        rs = [r for r in results if r["zoo"] == zoo_name]
        base = rs[0]
        if len(rs) == 1:
            continue
        best = max(rs[1:], key=lambda r: r["test_mean"])
        margin = best["test_mean"] - base["test_mean"]
        spread = max(best["test_std"], base["test_std"])
        at_chance = max(best["test_mean"], base["test_mean"]) < base["chance"] + 5
        print(f"{zoo_name}: best augmented row '{best['augmentation']}' {margin:+.2f} pts over none; spread "
              f"(larger std) {spread:.2f} -> floor {'met' if margin > spread else 'NOT met'}"
              f"{' (both within 5 pts of chance: no signal to compare)' if at_chance else ''}")
    write_outputs(results, Path(args.out), args)
    print(f"tables: {Path(args.out) / 'bench_augment.md'}, .csv; chart: {Path(args.out) / 'bench_augment.png'}")


if __name__ == "__main__":
    main()
