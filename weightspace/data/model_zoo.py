"""Model zoos for generalization prediction, in the style of the Small CNN Zoo (Unterthiner et al., 2020).

Many small CNNs (:class:`weightspace.models.SmallCNN`) or MLPs (:func:`weightspace.models.mlp`) are
trained on digits (default), MNIST or Fashion-MNIST with hyperparameters drawn per model: learning
rate, weight decay, dropout, initialization, optimizer, activation, training length, fraction of the
training set and data order. Each model's weights are saved with its test accuracy, train loss and
hyperparameters, sharded and resumable like the INR zoos (see :mod:`.zoo`).

Models that share an architecture and optimizer (width, activation, dropout, optimizer) train
together: one ``torch.func.vmap`` of ``torch.func.grad`` over their stacked parameters per step, each
model with its own minibatches, learning rate and weight decay; a model leaves the batch when it
reaches its own training length. Hyperparameters of model ``i`` come from a generator seeded by
``(seed, i)``; minibatches and dropout masks from one seeded by ``(seed, shard, group)``, so a shard
is reproducible and a resumed run equals an uninterrupted one. Dropout masks are drawn explicitly
from that generator (:class:`MaskDropout`), never from torch's global random state, which training a
zoo leaves as it found it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from . import _args
from .adam import adam_step

ACTIVATIONS = ("relu", "tanh")
OPTIMIZERS = ("adam", "sgd")
INITS = ("default", "xavier_normal", "orthogonal", "normal")
DROPOUTS = (0.0, 0.1, 0.3)
STEPS = (100, 200, 400, 800)
ZOO_SOURCES = ("digits", "mnist", "fashion-mnist")  # grey-scale 10-class sources (CIFAR-10 would need C = 3)


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of one zoo model (all recorded with its weights)."""

    arch: str
    width: int
    activation: str
    optimizer: str
    dropout: float
    lr: float
    weight_decay: float
    init: str
    init_std: float
    steps: int
    train_fraction: float
    batch_size: int

    @property
    def group(self) -> tuple:
        return (self.arch, self.width, self.activation, self.optimizer, self.dropout)


def sample_config(seed: int, index: int, arch: str = "cnn", widths: Sequence[int] = (16,),
                  steps: Sequence[int] = STEPS, batch_size: int = 32) -> ModelConfig:
    """The hyperparameters of model ``index`` (deterministic in ``(seed, index)``)."""
    rng = np.random.default_rng([int(seed), int(index)])
    optimizer = OPTIMIZERS[rng.integers(len(OPTIMIZERS))]
    lo, hi = (1e-4, 1e-2) if optimizer == "adam" else (1e-3, 1e-1)
    return ModelConfig(arch=arch, width=int(rng.choice(list(widths))),
                       activation=ACTIVATIONS[rng.integers(len(ACTIVATIONS))], optimizer=optimizer,
                       dropout=float(DROPOUTS[rng.integers(len(DROPOUTS))]),
                       lr=float(math.exp(rng.uniform(math.log(lo), math.log(hi)))),
                       weight_decay=float(math.exp(rng.uniform(math.log(1e-6), math.log(1e-2)))),
                       init=INITS[rng.integers(len(INITS))],
                       init_std=float(math.exp(rng.uniform(math.log(1e-2), math.log(0.3)))),
                       steps=int(rng.choice(list(steps))), train_fraction=float(rng.uniform(0.1, 1.0)),
                       batch_size=int(batch_size))


def build_model(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int = 10,
                generator: torch.Generator | None = None) -> torch.nn.Module:
    """The module of a config (``in_shape`` = ``(C, H, W)``). With ``generator``, its parameters are
    drawn from it under ``cfg.init`` (:func:`init_model`) and torch's global random state is left
    alone; without, PyTorch's default initialization draws them from the global state."""
    if generator is None:
        return _architecture(cfg, in_shape, num_classes)
    if cfg.arch not in ("cnn", "mlp"):
        raise ValueError(f"unknown architecture {cfg.arch!r} (cnn or mlp)")
    with torch.device("meta"):                                         # no initialization, no random numbers
        model = _architecture(cfg, in_shape, num_classes)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, t in init_model(model, cfg, generator).items():
            params[name].copy_(t)
    return model


def _architecture(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    from ..models import SmallCNN, mlp

    if cfg.arch == "cnn":
        return SmallCNN(in_channels=in_shape[0], width=cfg.width, num_classes=num_classes,
                        activation=cfg.activation, dropout=cfg.dropout)
    if cfg.arch == "mlp":
        return torch.nn.Sequential(torch.nn.Flatten(), mlp([math.prod(in_shape), cfg.width, cfg.width, num_classes],
                                                           cfg.activation, cfg.dropout))
    raise ValueError(f"unknown architecture {cfg.arch!r} (cnn or mlp)")


def init_model(model: torch.nn.Module, cfg: ModelConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Initial parameters under ``cfg.init`` (weights; biases start at zero except for ``default``,
    PyTorch's own initialization)."""
    out = {}
    for name, p in model.named_parameters():
        t = torch.empty_like(p)
        if cfg.init == "default":
            fan_in = p[0].numel() if p.dim() > 1 else None
            if p.dim() > 1:
                bound = 1 / math.sqrt(fan_in)           # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), ...)
                t.uniform_(-bound, bound, generator=generator)
            else:
                w = dict(model.named_parameters())[name[:-4] + "weight"]
                bound = 1 / math.sqrt(w[0].numel())
                t.uniform_(-bound, bound, generator=generator)
        elif p.dim() == 1:
            t.zero_()
        elif cfg.init == "xavier_normal":
            fan_in, fan_out = p[0].numel(), p.shape[0] * p[0][0].numel()
            t.normal_(0, math.sqrt(2 / (fan_in + fan_out)), generator=generator)
        elif cfg.init == "orthogonal":
            flat = torch.randn(p.shape[0], p[0].numel(), generator=generator)
            q, r = torch.linalg.qr(flat.T if flat.shape[0] < flat.shape[1] else flat)
            q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
            t.copy_((q.T if flat.shape[0] < flat.shape[1] else q).reshape(p.shape))
        else:  # "normal"
            t.normal_(0, cfg.init_std, generator=generator)
        out[name] = t
    return out


class MaskDropout(torch.nn.Module):
    """Dropout whose mask is given: in training, ``x * mask / (1 - p)`` with the ``mask`` buffer
    (passed per model through ``functional_call``, shaped like ``x``); the identity in eval mode.
    ``in_shape``: the shape of its input in the last eval-mode call (a dry run sizes the masks)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.in_shape: tuple[int, ...] | None = None
        self.register_buffer("mask", torch.ones(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            self.in_shape = tuple(x.shape)
            return x
        return x * self.mask.to(x.dtype) * (1.0 / (1.0 - self.p))


def explicit_dropout(model: torch.nn.Module, example: torch.Tensor) -> dict[str, MaskDropout]:
    """Swap every ``nn.Dropout`` of ``model`` for a :class:`MaskDropout` of the same rate, in place,
    and size them with a dry run on ``example`` (one input batch); returns ``{buffer name: module}``
    of those that drop something (``p > 0``)."""
    for module in list(model.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, torch.nn.Dropout):
                setattr(module, child_name, MaskDropout(child.p))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(example)
    model.train(was)
    return {f"{name}.mask" if name else "mask": m for name, m in model.named_modules()
            if isinstance(m, MaskDropout) and m.p > 0}


def draw_masks(dropouts: dict[str, MaskDropout], n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Keep-masks ``[n, *in_shape]`` (1 with probability ``1 - p``) for ``n`` models at once."""
    return {k: torch.empty(n, *m.in_shape).bernoulli_(1 - m.p, generator=generator) for k, m in dropouts.items()}


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] % (2 ** 63))


def train_group(cfgs: list[ModelConfig], indices: list[int], data: dict, seed: int, group_seed: int,
                eval_batch: int = 2000) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train models that share ``cfg.group`` at once; ``(state tensors [n, ...], metrics [n])``."""
    xtr, ytr = data["x_train"], data["y_train"]
    n = len(cfgs)
    # the module only lends its structure (the weights are passed in); built without global random numbers
    model = build_model(cfgs[0], tuple(xtr.shape[1:]),
                        generator=torch.Generator().manual_seed(_seed(seed, indices[0], 1)))
    B = cfgs[0].batch_size
    dropouts = explicit_dropout(model, xtr[:B])
    names = [k for k, _ in model.named_parameters()]
    params = {k: torch.stack([init_model(model, c, torch.Generator().manual_seed(_seed(seed, i, 1)))[k]
                              for c, i in zip(cfgs, indices)]) for k in names}
    shapes = {k: v.shape[1:] for k, v in params.items()}
    sizes = [math.prod(s) for s in shapes.values()]
    flat = torch.cat([params[k].reshape(n, -1) for k in names], 1)

    def unflat(f: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: t.reshape(t.shape[0], *shapes[k]) for k, t in zip(names, f.split(sizes, 1))}

    g = torch.Generator().manual_seed(group_seed)                       # minibatches and dropout masks
    subsets = [torch.randperm(len(xtr), generator=torch.Generator().manual_seed(_seed(seed, i, 2)))
               [:max(c.batch_size, round(c.train_fraction * len(xtr)))] for c, i in zip(cfgs, indices)]

    def loss(p, masks, x, y):
        return F.cross_entropy(functional_call(model, {**p, **masks}, (x,)), y)

    # randomness="error": every random number comes from ``g`` (drawn outside), none from the global state
    grad_fn = vmap(grad(loss), in_dims=(0, 0, 0, 0), randomness="error")
    lr = torch.tensor([c.lr for c in cfgs])
    wd = torch.tensor([c.weight_decay for c in cfgs]).unsqueeze(1)
    steps_needed = torch.tensor([c.steps for c in cfgs])
    sgd = cfgs[0].optimizer == "sgd"
    m1, m2 = torch.zeros_like(flat), torch.zeros_like(flat)
    rows = torch.arange(n)                                              # active row -> model position
    out_flat = torch.empty_like(flat)
    model.train()
    step = 0
    while len(rows):
        pick = torch.stack([subsets[int(r)][torch.randint(len(subsets[int(r)]), (B,), generator=g)] for r in rows])
        gr = grad_fn(unflat(flat), draw_masks(dropouts, len(rows), g), xtr[pick], ytr[pick])
        gflat = torch.cat([gr[k].reshape(len(rows), -1) for k in names], 1).add_(flat * wd[rows])
        step += 1
        if sgd:                                                        # SGD with momentum 0.9
            m1.mul_(0.9).add_(gflat)
            flat.sub_(m1 * lr[rows].unsqueeze(1))
        else:
            adam_step(flat, gflat, m1, m2, torch.full((len(rows),), step), lr[rows])
        done = steps_needed[rows] <= step
        if done.any():
            out_flat[rows[done]] = flat[done]
            keep = ~done
            rows, flat, m1, m2 = rows[keep], flat[keep], m1[keep], m2[keep]
    model.eval()
    final = unflat(out_flat)
    metrics = _evaluate(model, final, data, subsets, eval_batch)
    return final, metrics


def _evaluate(model, params, data, subsets, eval_batch) -> dict[str, torch.Tensor]:
    def logits(p, x):
        return functional_call(model, p, (x,))

    def over(x, y):
        f = vmap(logits, in_dims=(0, None))
        losses, correct = 0.0, 0.0
        with torch.no_grad():
            for s in range(0, len(x), eval_batch):
                out = f(params, x[s:s + eval_batch])                     # [n, b, classes]
                yy = y[s:s + eval_batch]
                losses = losses + F.cross_entropy(out.transpose(1, 2), yy.expand(out.shape[0], -1),
                                                  reduction="none").sum(1)
                correct = correct + (out.argmax(-1) == yy).float().sum(1)
        return losses / len(x), correct / len(x)

    test_loss, test_acc = over(data["x_test"], data["y_test"])
    n = next(iter(params.values())).shape[0]
    train_loss, train_acc = torch.empty(n), torch.empty(n)
    with torch.no_grad():
        for i in range(n):
            sub = subsets[i][:eval_batch]
            out = functional_call(model, {k: v[i] for k, v in params.items()}, (data["x_train"][sub],))
            train_loss[i] = F.cross_entropy(out, data["y_train"][sub])
            train_acc[i] = (out.argmax(-1) == data["y_train"][sub]).float().mean()
    return {"test_accuracy": test_acc, "test_loss": test_loss, "train_loss": train_loss, "train_accuracy": train_acc}


def load_training_data(source: str = "digits", root: str | Path | None = None, seed: int = 0) -> dict:
    """Training and test images as ``[N, 1, H, W]`` float tensors with labels. MNIST / Fashion-MNIST
    use their official splits; digits a deterministic 1,297 / 500 split."""
    from .datasets import split_indices
    from .images import load_images, load_train_test

    _args.choice("source", source.lower().replace("_", "-"), ZOO_SOURCES)
    if source == "digits":
        x, y = load_images("digits")
        s = split_indices(len(x), {"train": -1, "test": 500}, seed=seed)
        return {"x_train": x[s["train"]].unsqueeze(1), "y_train": y[s["train"]],
                "x_test": x[s["test"]].unsqueeze(1), "y_test": y[s["test"]], "name": "digits"}
    (xtr, ytr), (xte, yte) = load_train_test(source, root)
    return {"x_train": xtr.unsqueeze(1), "y_train": ytr, "x_test": xte.unsqueeze(1), "y_test": yte, "name": source}


def _zoo_spec(cfgs: Sequence[ModelConfig], x: torch.Tensor, seed: int):
    """The zoo's spec: one trace per activation drawn, keeping only the symmetries all of them share
    (a zoo mixing ReLU and tanh models has neither positive scalings nor sign flips)."""
    from ..spec import WeightSpaceSpec
    from ..spec.meet import common_symmetries

    specs = []
    for act in sorted({c.activation for c in cfgs}):
        cfg = next(c for c in cfgs if c.activation == act)
        model = build_model(cfg, tuple(x.shape[1:]), generator=torch.Generator().manual_seed(_seed(seed, 0, 1)))
        specs.append(WeightSpaceSpec.from_module(model.eval(), x[:2]))
    return common_symmetries(specs)


def make_model_zoo(out: str | Path, num_models: int = 200, source: str = "digits", root: str | Path | None = None,
                   arch: str = "cnn", width: int = 16, steps: Sequence[int] = STEPS, batch_size: int = 32,
                   seed: int = 0, shard_size: int = 100, progress: bool = True, max_shards: int | None = None,
                   threads: int | None = None) -> dict:
    """Train a zoo of ``num_models`` models under ``out`` (resumable); returns the manifest.

    One architecture per zoo (``arch``, ``width``): a zoo is a dataset of one weight space. Records per
    model: ``test_accuracy``, ``test_loss``, ``train_loss``, ``train_accuracy`` and every
    hyperparameter (categorical ones as indices into the lists in the manifest).

    Every argument is checked before the data are loaded or anything is written (counts and sizes
    >= 1, ``seed`` >= 0, a known ``arch`` and ``source``): a bad one raises
    :class:`~weightspace.errors.UsageError` naming it.
    """
    from .inr import _with_threads
    from .zoo import ZooRun, fingerprint

    num_models = _args.count("num_models", num_models)
    _args.choice("arch", arch, ("cnn", "mlp"))
    _args.choice("source", source.lower().replace("_", "-"), ZOO_SOURCES)
    width, batch_size, shard_size = (_args.count(n, v) for n, v in
                                     (("width", width), ("batch_size", batch_size), ("shard_size", shard_size)))
    steps = _args.counts("steps", steps)
    _args.count("seed", seed, low=0)
    _args.count("max_shards", max_shards, optional=True)
    _args.count("threads", threads, low=0, optional=True)
    _args.out_folder("out", out)
    data = load_training_data(source, root, seed)
    cfgs = [sample_config(seed, i, arch, (width,), steps, batch_size) for i in range(num_models)]
    spec = _zoo_spec(cfgs, data["x_train"], seed)
    identity = {"source": {"name": data["name"], "train": len(data["x_train"]), "test": len(data["x_test"]),
                           "sha256": fingerprint(data["x_train"], data["y_train"], data["x_test"], data["y_test"])},
                "recipe": {"arch": arch, "width": width, "steps": list(steps), "batch_size": batch_size,
                           "activations": list(ACTIVATIONS), "optimizers": list(OPTIMIZERS), "inits": list(INITS),
                           "dropouts": list(DROPOUTS), "lr": {"adam": [1e-4, 1e-2], "sgd": [1e-3, 1e-1]},
                           "weight_decay": [1e-6, 1e-2], "init_std": [1e-2, 0.3], "train_fraction": [0.1, 1.0],
                           # masks drawn from the group's generator (older zoos used torch's global state):
                           # a folder begun by the older code is refused rather than resumed with other masks
                           "dropout_masks": "generator"},
                "seed": seed}
    run = ZooRun(out, arch, identity, num_models, shard_size,
                 extra={"spec": spec.to_dict(), "splits": {}, "configs": [asdict(c) for c in cfgs]})
    todo = run.pending()
    if max_shards is not None:
        todo = todo[:max(0, int(max_shards))]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm
        left = sum(run.shard_range(k)[1] - run.shard_range(k)[0] for k in run.pending())
        bar = tqdm(total=num_models, initial=num_models - left, desc=f"model zoo {run.out.name}", unit="model",
                   dynamic_ncols=True)
    t0, tally = time.perf_counter(), [0, 0.0]
    try:
        for k in todo:
            start, stop = run.shard_range(k)
            ids = list(range(start, stop))
            groups: dict[tuple, list[int]] = {}
            for i in ids:
                groups.setdefault(cfgs[i].group, []).append(i)
            tensors = {name: torch.empty(stop - start, *spec[name].shape) for name in spec.names}
            records: dict[str, torch.Tensor] = {}
            for gi, (key, members) in enumerate(sorted(groups.items())):
                state, metrics = _with_threads(threads, train_group, [cfgs[i] for i in members], members, data,
                                               seed, _seed(seed, k, gi, 3))
                pos = torch.tensor(members) - start
                for name, t in state.items():
                    tensors[name][pos] = t
                for name, t in metrics.items():
                    records.setdefault(name, torch.empty(stop - start))[pos] = t
                tally[0] += len(members)
                tally[1] += float(metrics["test_accuracy"].sum())
                if bar is not None:
                    bar.update(len(members))
                    bar.set_postfix_str(f"{tally[0] / (time.perf_counter() - t0):.1f} models/s, "
                                        f"mean test acc {tally[1] / tally[0]:.3f}")
            for name in ("lr", "weight_decay", "dropout", "init_std", "train_fraction"):
                records[name] = torch.tensor([getattr(cfgs[i], name) for i in ids], dtype=torch.float64)
            records["steps"] = torch.tensor([cfgs[i].steps for i in ids])
            records["activation"] = torch.tensor([ACTIVATIONS.index(cfgs[i].activation) for i in ids])
            records["optimizer"] = torch.tensor([OPTIMIZERS.index(cfgs[i].optimizer) for i in ids])
            records["init"] = torch.tensor([INITS.index(cfgs[i].init) for i in ids])
            records["index"] = torch.tensor(ids)
            run.write(k, {**tensors, **records})
    finally:
        if bar is not None:
            bar.close()
    if run.pending():
        return run.manifest
    rec = run.load_all(keys=("test_accuracy",))
    acc = rec["test_accuracy"]
    return run.finish({"summary": {"mean_test_accuracy": float(acc.mean()), "min_test_accuracy": float(acc.min()),
                                   "max_test_accuracy": float(acc.max())},
                       "test_accuracy": [round(float(a), 5) for a in acc]})
