"""weightspace train

Train a metanetwork on a zoo: AdamW with warm-up and cosine decay, gradient clipping, early stopping
on the validation split, checkpoints every epoch. The run folder gets config.json,
checkpoint.safetensors, best.safetensors, metrics.json (final validation and test figures) and
curve.png. A killed run continues with --resume and ends with the same weights.

  weightspace fit-inrs --source digits --out datasets/digits-inr
  weightspace train --task digits-inr --zoo datasets/digits-inr --model nggnn --out runs/nggnn
  weightspace train --task mnist-inr --zoo datasets/mnist-inr --model ngt --epochs 100 --out runs/ngt
  weightspace train --task generalization --zoo datasets/cnn-zoo --model nfn-hnp --out runs/gen
  weightspace evaluate runs/nggnn
  torchrun --standalone --nproc_per_node 4 -m weightspace.cli train --task mnist-inr --zoo datasets/mnist-inr
      --model gmn --device cuda --precision bf16 --out runs/gmn     (one line: 4 processes, a GPU each)

Under torchrun the command trains data-parallel (DistributedDataParallel; gloo on CPU, NCCL with
--device cuda); --batch-size is the global batch, so the result does not depend on the number of
processes; rank 0 writes the run folder. --precision bf16 and --compile help on GPUs; on CPUs they
are usually slower and are off by default.

Models: flat-mlp, unf, nfn-np, nfn-hnp, nggnn, ngt, gmn, scalegmn (options as JSON with
--model-options, e.g. '{"hidden": 64, "layers": 4}'). Tasks: digits-inr, mnist-inr,
fashion-mnist-inr, inr-classification (class labels), generalization (each model's test accuracy).
Augmentations (--augment, repeatable): permutation, sign, scaling=a:b, noise=std, dropout=p,
masking=q, rotate=deg, translate=s, scale=a:b (INR geometry), mixup=alpha[:none|permute|match].
"""
import json

from ..errors import UsageError

HELP = "train a metanetwork on a zoo (checkpointed, resumable)"
RESUMABLE = True


def add_arguments(p):
    p.add_argument("--task", required=True, help="digits-inr, mnist-inr, fashion-mnist-inr, inr-classification "
                                                 "or generalization")
    p.add_argument("--zoo", required=True, help="zoo folder (from weightspace fit-inrs / make-zoo)")
    p.add_argument("--out", required=True, help="run folder (new, or an interrupted run with --resume)")
    p.add_argument("--model", default="nggnn", help="metanetwork name (default nggnn)")
    p.add_argument("--model-options", default="{}", help="JSON object of the model's options")
    p.add_argument("--epochs", type=int, default=50, help="epochs (default 50)")
    p.add_argument("--batch-size", type=int, default=64, help="networks per step (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay (default 5e-4)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up length in epochs (default 1)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip, 0 for none (default 1)")
    p.add_argument("--patience", type=int, default=0, help="stop after N epochs without a better validation "
                                                           "metric (default 0: never)")
    p.add_argument("--augment", action="append", default=[], help="an augmentation (repeatable), e.g. permutation")
    p.add_argument("--train-size", type=int, help="use only the first N networks of the training split")
    p.add_argument("--targets", help="file with one target per network (.safetensors, .pt or .npy) instead of "
                                     "the zoo's record")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization, data order and augmentation")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar: one line per epoch (for logs)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (under torchrun: the LOCAL_RANK GPU)")
    p.add_argument("--precision", default="fp32", help="fp32 (default) or bf16 (autocast; for GPUs)")
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile (for GPUs)")


def parse_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"not valid JSON ({e})", "--model-options") from e
    if not isinstance(options, dict):
        raise UsageError(f"must be a JSON object such as '{{\"hidden\": 32}}', got {text!r}", "--model-options")
    return options


def run(args) -> int:
    import torch

    from ..train import TrainConfig, train
    from ..train.distributed import Ranks, init_from_environment

    if args.threads is not None:
        if args.threads <= 0:
            raise UsageError(f"must be > 0, got {args.threads}", "--threads")
        torch.set_num_threads(args.threads)
    options = parse_options(args.model_options)
    config = TrainConfig(task=args.task, zoo=args.zoo, model=args.model, model_options=options,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         warmup=args.warmup, clip=args.clip, patience=args.patience, augment=tuple(args.augment),
                         train_size=args.train_size, targets=args.targets, seed=args.seed, precision=args.precision)
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"expected cpu or cuda, got {args.device!r}", "--device")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("no CUDA GPU is visible to this process; use --device cpu", "--device")
    created = init_from_environment(args.device)
    try:
        m = train(config, args.out, resume=args.resume, progress=not args.no_progress, device=args.device,
                  compile=args.compile)
        main = Ranks.current().main
    finally:
        if created:
            import torch.distributed as dist
            dist.destroy_process_group()
    if not main:
        return 0
    test = ", ".join(f"{k} {v:.4f}" for k, v in m["test"].items())
    print(f"{m['model']} on {m['task']}: test {test} (best epoch {m['best_epoch']} of {m['epochs_run']}, "
          f"{m['train_seconds']:.1f} s training, {m['parameters']:,} parameters)")
    print(f"run folder: {args.out} (metrics.json, curve.png, best.safetensors)")
    return 0
