"""One small trainer for every metanetwork and task, in plain PyTorch.

AdamW; a linear warm-up then a cosine decay, computed from the optimizer step (no scheduler object
to save); gradient clipping; early stopping on the validation split's primary metric; augmentation
transforms on the raw weights (the model normalizes inside). A run directory holds ``config.json``,
``checkpoint.safetensors`` (written atomically every epoch), ``best.safetensors`` (the best
validation epoch's model), ``metrics.json``, ``curve.png``.

Resuming gives the same final weights as an uninterrupted run: every epoch draws its data order,
augmentations and dropout from generators seeded by ``(seed, epoch)`` (the global generator is
forked for dropout and restored), and the checkpoint holds the exact model and optimizer state.

Under ``torchrun`` (or any initialized default process group) the same function trains data-parallel
with DistributedDataParallel: ``batch_size`` stays the global batch, and the final weights equal the
one-process run's up to float rounding (see :mod:`.distributed` for how a step is split). Rank 0 alone
writes the run folder and prints. ``precision="bf16"`` runs forward and loss under bf16 autocast;
``compile=True`` wraps the model in ``torch.compile``; both are off by default.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import UsageError
from ..io import save_checkpoint
from ..space import WeightSpace
from .checkpoint import load_run_checkpoint, save_run_checkpoint
from .config import TrainConfig, augmentations
from .data import TaskData, load_task_data
from .distributed import Ranks
from .models import build_model
from .tasks import Task, get_task

__all__ = ["train", "evaluate", "lr_at", "predict_split"]

CHECKPOINT, BEST, CONFIG, METRICS, CURVE = ("checkpoint.safetensors", "best.safetensors", "config.json",
                                            "metrics.json", "curve.png")


def lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 97 + stream) % (2**62)


@torch.no_grad()
def predict_split(model, task: Task, w: WeightSpace, batch_size: int, ranks: Ranks | None = None,
                  precision: str = "fp32") -> torch.Tensor:
    """``task.predict(model(w))`` over a split, in batches, in eval mode, on the CPU. With ``ranks`` of
    several processes each predicts its part and all get the whole (:meth:`Ranks.gather_parts`)."""
    ranks = ranks or Ranks()
    n = w.batch_size
    part = ranks.part(n)
    lo, hi = (part.start, part.stop) if len(part) else (0, 1)       # an empty part predicts one row, keeps 0
    was = model.training
    model.eval()
    out = []
    for s in range(lo, hi, batch_size):
        x = w[s:min(s + batch_size, hi)].to(ranks.device)
        with _autocast(ranks.device, precision):
            out.append(task.predict(model(x), x).float().cpu())
    model.train(was)
    local = torch.cat(out)[:len(part)]
    return ranks.gather_parts(local, n)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _metrics(model, task, data: TaskData, split: str, batch_size: int, ranks: Ranks | None = None,
             precision: str = "fp32") -> dict[str, float]:
    w, y = data.part(split)
    return task.metrics(predict_split(model, task, w, batch_size, ranks, precision), y)


def _better(a: float, b: float | None, higher: bool) -> bool:
    return b is None or (a > b if higher else a < b)


def _prepare_dir(out: Path, config: TrainConfig, resume: bool) -> bool:
    """True when there is a checkpoint to resume from; refuses to overwrite another run."""
    cfg_path = out / CONFIG
    if cfg_path.is_file():
        saved = TrainConfig.from_json(cfg_path.read_text(), str(cfg_path))
        if not resume:
            raise UsageError("the folder already holds a run; pass --resume to continue it, or choose another --out",
                             str(out))
        diff = saved.differences(config)
        if diff:
            raise UsageError(f"--resume with another configuration than the run's ({'; '.join(diff)})", str(cfg_path))
        return (out / CHECKPOINT).is_file()
    if out.exists() and any(out.iterdir()):
        raise UsageError("the output folder is not empty and holds no run; choose another --out", str(out))
    return False


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, task: Task | None = None,
          progress: bool = True, on_epoch_end: Callable[[int, dict], None] | None = None,
          device: str | torch.device | None = None, compile: bool = False) -> dict:
    """Train ``config.model`` on ``config.task``; returns the final metrics (also in ``metrics.json``).

    ``task``: a :class:`Task` record instead of the named one (custom workflows);
    ``on_epoch_end(epoch, record)``: called on rank 0 after each epoch's checkpoint is written;
    ``device``: ``cpu`` (default) or ``cuda`` (each process its ``LOCAL_RANK`` GPU);
    ``compile``: run the model through ``torch.compile``. With an initialized default process group
    (``torchrun``), every process calls this and they train one model together."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    task = task or get_task(config.task)
    ranks = Ranks.current(device)
    ranks.check_batch(config.batch_size)
    has_ckpt = _prepare_dir(out, config, resume)
    data = load_task_data(config, task)
    transform, mixup = augmentations(config.augment)
    if mixup is not None and not task.mixable:
        raise UsageError(f"task {task.name!r} cannot mix its targets; drop mixup", "--augment")
    model = build_model(config.model, data.spec, data.out_features, data.norm, evaluator=data.evaluator,
                        generator=torch.Generator().manual_seed(config.seed), **config.model_options)
    model.to(ranks.device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": None, "since_best": 0, "history": [],
             "seconds": 0.0, "done": False}
    if has_ckpt:
        state = load_run_checkpoint(out / CHECKPOINT, model, opt)
    ranks.barrier()                                     # every process has checked the folder before it changes
    if not has_ckpt and ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        _write_text(out / CONFIG, config.to_json())
        _write_text(out / "spec.json", json.dumps(data.spec.to_dict()))
    forward = ranks.wrap(model)                         # DistributedDataParallel with several processes
    if compile:
        forward = torch.compile(forward)
    train_w, train_y = data.part("train")
    n = train_w.batch_size
    per_epoch = math.ceil(n / config.batch_size)
    total, warmup = config.epochs * per_epoch, int(round(config.warmup * per_epoch))
    bar = tqdm(total=total, initial=state["step"], disable=not progress or not ranks.main, unit="step",
               desc=f"{config.model} on {task.name}")
    for epoch in range(state["epoch"], config.epochs):
        if state["done"]:
            break
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, 0)))
        aug_gen = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, 1))
        losses = []
        model.train()
        with torch.random.fork_rng(devices=[]):
            # dropout of this epoch (and of this process: model dropout cannot follow the sample)
            torch.manual_seed((_epoch_seed(config.seed, epoch, 2) + ranks.rank * 1_000_000_007) % (2**62))
            for s in range(0, n, config.batch_size):
                idx = order[s:s + config.batch_size]
                w, y = train_w[idx], train_y[idx]
                if transform is not None:
                    w = transform(w, aug_gen)
                for g in opt.param_groups:
                    g["lr"] = lr_at(state["step"], total, warmup, config.lr)
                loss, value = _step_loss(forward, task, w, y, mixup, aug_gen, ranks, config.precision)
                if not math.isfinite(value):
                    raise FloatingPointError(f"the training loss became {value} at step {state['step']} "
                                             f"(epoch {epoch + 1}); lower --lr or raise --clip")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                opt.step()
                losses.append(value)
                state["step"] += 1
                bar.update(1)
        val = _metrics(model, task, data, "val", config.eval_batch_size, ranks, config.precision)
        record = {"epoch": epoch, "train_loss": sum(losses) / len(losses), "val": val,
                  "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        state["history"].append(record)
        state["seconds"] += record["seconds"]
        if _better(val[task.primary], state["best"], task.higher_is_better):
            state.update(best=val[task.primary], best_epoch=epoch, since_best=0)
            if ranks.main:
                save_checkpoint(model.state_dict(), out / BEST)
        else:
            state["since_best"] += 1
        state["epoch"] = epoch + 1
        state["done"] = bool(config.patience and state["since_best"] >= config.patience)
        bar.set_postfix({"epoch": epoch + 1, "loss": f"{record['train_loss']:.4f}",
                         f"val_{task.primary}": f"{val[task.primary]:.4f}"})
        if not ranks.main:
            continue
        save_run_checkpoint(out / CHECKPOINT, model, opt, state)
        if not progress:                                  # a log line per epoch for runs under nohup
            print(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}, val {task.primary} "
                  f"{val[task.primary]:.4f}, {record['seconds']:.1f} s", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    bar.close()
    ranks.barrier()                                     # rank 0 has written best.safetensors
    return _finish(out, config, task, data, model, state, ranks)


def _step_loss(forward, task: Task, w: WeightSpace, y: torch.Tensor, mixup, gen: torch.Generator,
               ranks: Ranks, precision: str) -> tuple[torch.Tensor, float]:
    """``(loss to differentiate, the global batch's mean loss)`` of one step. MixUp is drawn for the
    whole global batch; with several processes each then keeps its rows (:meth:`Ranks.rows`)."""
    y2 = lam = None
    if mixup is not None:
        w, lam, partner = mixup(w, gen)
        y2 = y[partner]
    if ranks.world > 1:
        mine, weight = ranks.rows(w.batch_size)
        w, y = w[mine], y[mine]
        y2, lam = (None, None) if mixup is None else (y2[mine], lam[mine])
    w, y = w.to(ranks.device), y.to(ranks.device)
    with _autocast(ranks.device, precision):
        pred = task.predict(forward(w), w)
        if mixup is None:
            per = task.loss(pred, y)
        else:
            lam = lam.to(ranks.device, pred.dtype)
            per = lam * task.loss(pred, y) + (1 - lam) * task.loss(pred, y2.to(ranks.device))
    if ranks.world == 1:
        loss = per.mean()
        return loss, loss.item()
    loss = per.float().reshape(w.batch_size, -1).mean(1).sum() * weight
    return loss, ranks.mean_over_processes(loss)


def _finish(out: Path, config: TrainConfig, task: Task, data: TaskData, model, state: dict,
            ranks: Ranks | None = None) -> dict:
    from .plot import plot_curves

    ranks = ranks or Ranks()
    model.load_state_dict(_load_model_file(out / BEST))
    metrics = {split: _metrics(model, task, data, split, config.eval_batch_size, ranks, config.precision)
               for split in ("val", "test")}
    result = {"task": task.name, "model": config.model, "primary": task.primary, "test": metrics["test"],
              "val": metrics["val"], "best_epoch": state["best_epoch"] + 1, "epochs_run": state["epoch"],
              "early_stopped": state["done"], "train_networks": len(data.splits["train"]),
              "parameters": sum(p.numel() for p in model.parameters()), "train_seconds": round(state["seconds"], 2)}
    if not ranks.main:
        return result
    _write_text(out / METRICS, json.dumps(result, indent=2))
    plot_curves(state["history"], task.primary, out / CURVE, f"{config.model} on {task.name}",
                test=metrics["test"][task.primary])
    return result


def evaluate(run_dir: str | Path, zoo: str | Path | None = None, split: str = "test",
             task: Task | None = None) -> dict[str, float]:
    """Metrics of a finished (or interrupted) run's best model on ``split`` of its zoo (or of ``zoo``,
    which must hold networks of the same architecture)."""
    from ..spec import WeightSpaceSpec

    run = Path(run_dir)
    if not (run / CONFIG).is_file():
        raise UsageError(f"not a run directory (no {CONFIG}); train one with weightspace train", str(run))
    config = TrainConfig.from_json((run / CONFIG).read_text(), str(run / CONFIG))
    if zoo is not None:
        config = TrainConfig(**{**json.loads(config.to_json()), "zoo": str(zoo)})
    task = task or get_task(config.task)
    data = load_task_data(config, task)
    spec = WeightSpaceSpec.from_dict(json.loads((run / "spec.json").read_text()))
    diff = spec.first_difference(data.spec)
    if diff:
        raise UsageError(f"the zoo's networks are not the architecture this run was trained on: {diff}",
                         str(Path(config.zoo) / "manifest.json"))
    if split not in data.splits:
        raise UsageError(f"no split {split!r}; splits are {', '.join(data.splits)}", "--split")
    model = build_model(config.model, spec, data.out_features, data.norm, evaluator=data.evaluator,
                        **config.model_options)
    if not (run / BEST).is_file():
        raise UsageError(f"no {BEST} yet: the run has not finished an epoch", str(run))
    try:
        model.load_state_dict(_load_model_file(run / BEST))
    except RuntimeError as e:
        raise UsageError(f"does not fit the run's model: {str(e).splitlines()[0]}", str(run / BEST)) from e
    return _metrics(model, task, data, split, config.eval_batch_size)


def _load_model_file(path: Path) -> dict:
    from ..io import check_finite, load_checkpoint

    state = load_checkpoint(path)
    check_finite(state, path)
    return state


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
