"""weightspace make-zoo

Train a zoo of small CNNs (the Small CNN Zoo architecture) or MLPs with hyperparameters drawn per
model (learning rate, weight decay, dropout, initialization, optimizer, activation, training length,
training-set fraction), and save weights with test accuracy, train loss and hyperparameters:
a dataset for generalization prediction. Sharded and resumable (run the same command again).

  weightspace make-zoo --out datasets/digits-cnn-zoo
  weightspace make-zoo --source mnist --root ../shared/data/mnist --out datasets/mnist-cnn-zoo --num-models 2000

Split the shards over the jobs of a SLURM array with --shard i/n and/or over torchrun processes (see
weightspace fit-inrs --help); weightspace zoo-check PATH lists the shards still missing.
"""
HELP = "train a model zoo (CNNs / MLPs with varied hyperparameters), sharded and resumable"
RESUMABLE = True                 # Ctrl-C: "interrupted; rerun the same command to resume" (weightspace.cli)


def add_arguments(p):
    p.add_argument("--out", required=True, help="output folder (resumed if it holds the same zoo)")
    p.add_argument("--source", default="digits", help="digits (default), mnist or fashion-mnist")
    p.add_argument("--root", help="folder with the source's IDX files")
    p.add_argument("--arch", default="cnn", choices=["cnn", "mlp"], help="SmallCNN (default) or a 2-hidden-layer MLP")
    p.add_argument("--width", type=int, default=16, help="channels / hidden units (default 16: the Small CNN Zoo)")
    p.add_argument("--num-models", type=int, default=200, help="models in the zoo (default 200)")
    p.add_argument("--steps", type=lambda s: tuple(int(v) for v in s.split(",")), default=(100, 200, 400, 800),
                   help="training lengths to draw from (default 100,200,400,800)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--max-shards", type=int, help="write at most this many shards, then stop (resume later)")
    p.add_argument("--shard", help="i/n: write only part i of n of the shards (job arrays; default: all)")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Every option is checked before the data are loaded or anything is written (the library's
    checks, named by option: ``--num-models must be >= 1``)."""
    import time

    from ._common import option_names, preload

    preload("torch", "numpy", "safetensors.torch", "tqdm.auto", "weightspace.data",
            *(["sklearn.datasets"] if args.source == "digits" else []))
    from ..data.model_zoo import make_model_zoo
    from ..data.shards import ZooIncomplete, writing_part
    from .fit_inrs import partial_message, writer_part

    part = writer_part(args.shard)
    t0 = time.perf_counter()
    try:
        with option_names(args), writing_part(part):
            m = make_model_zoo(args.out, num_models=args.num_models, source=args.source, root=args.root,
                               arch=args.arch, width=args.width, steps=args.steps, batch_size=args.batch_size,
                               seed=args.seed, shard_size=args.shard_size, progress=not args.no_progress,
                               max_shards=args.max_shards, threads=args.threads)
    except ZooIncomplete:               # this part's shards are written; other parts' are not (yet)
        if part.count == 1:
            raise
        m = {}
    if not m.get("complete"):
        print(partial_message(part, args.max_shards, args.out))
        return 0
    s = m["summary"]
    print(f"{m['num_items']} models in {args.out} (this run: {time.perf_counter() - t0:.1f} s); test accuracy "
          f"mean {s['mean_test_accuracy']:.3f}, range [{s['min_test_accuracy']:.3f}, {s['max_test_accuracy']:.3f}]")
    return 0
