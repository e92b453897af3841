"""weightspace fit-inrs

Fit one SIREN per image into a sharded, resumable zoo (safetensors shards + manifest.json).
The source's standard recipe (datasets/README.md) sets the images, splits and hyperparameters;
flags override single hyperparameters. Run the same command again to resume a killed run.

  weightspace fit-inrs --source digits --out datasets/digits-inr
  weightspace fit-inrs --source mnist --root ../shared/data/mnist --out datasets/mnist-inr --workers 2

On a cluster, split the shards over independent jobs with --shard i/n (a SLURM array:
--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT) and/or over torchrun processes (each rank takes
its share; use --workers 1 there); the job that writes the last shard completes the manifest, and
weightspace zoo-check PATH says which shards are still missing:

  sbatch --array=0-15 --wrap 'weightspace fit-inrs --source mnist --root data/mnist --out zoo --workers 1
      --shard $SLURM_ARRAY_TASK_ID/16'          (one line; sixteen independent jobs)
  torchrun --standalone --nproc_per_node 8 -m weightspace.cli fit-inrs --source mnist --root data/mnist
      --out zoo --workers 1                     (one line; eight processes on one node)
"""
HELP = "fit an INR zoo (one SIREN per image), sharded and resumable"
RESUMABLE = True                 # Ctrl-C: "interrupted; rerun the same command to resume" (weightspace.cli)


def add_arguments(p):
    p.add_argument("--source", default="digits", help="digits (default), mnist or fashion-mnist")
    p.add_argument("--root", help="folder with the source's raw files (IDX for MNIST / Fashion-MNIST)")
    p.add_argument("--out", required=True, help="output folder (resumed if it holds the same zoo)")
    p.add_argument("--seed", type=int, default=0, help="seed of INR initializations and the validation split")
    p.add_argument("--limit", type=int, help="only the first N images of each part (train, test): a quick subset")
    p.add_argument("--steps", type=int, help="most Adam steps per INR (recipe: 1000)")
    p.add_argument("--lr", type=float, help="Adam learning rate (recipe: 5e-4)")
    p.add_argument("--target-psnr", type=float, help="stop an INR at this PSNR in dB (recipe: 40)")
    p.add_argument("--hidden", type=lambda s: tuple(int(v) for v in s.split(",")), help="hidden widths, e.g. 32,32")
    p.add_argument("--w0", type=float, help="SIREN frequency (recipe: 30)")
    p.add_argument("--batch-size", type=int, help="INRs trained at once per worker (default: by image size)")
    p.add_argument("--shard-size", type=int, default=1000, help="INRs per shard file (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--max-shards", type=int, help="write at most this many shards, then stop (resume later)")
    p.add_argument("--shard", help="i/n: write only part i of n of the shards (job arrays; default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def writer_part(shard: str | None):
    """The part of the zoo this process writes: ``--shard i/n`` (default ``0/1``), split further over
    the processes ``torchrun`` started (rank ``r`` of ``w``: part ``i * w + r`` of ``n * w``)."""
    from ..data.shards import ShardPart
    from ..errors import UsageError
    from ..train.distributed import launched_rank, launched_world_size

    try:
        part = ShardPart.parse(shard) if shard is not None else ShardPart()
    except ValueError as e:
        raise UsageError(str(e), "--shard") from e
    return part.split(launched_rank(), launched_world_size())


def partial_message(part, max_shards: int | None, out: str) -> str:
    """What a run that ended before the zoo was complete says."""
    if part.count > 1 and max_shards is None:
        return (f"part {part} done: its shards are written to {out}; the zoo completes when the last part ends "
                f"(weightspace zoo-check {out} lists missing shards)")
    return f"stopped after --max-shards; run the same command again to continue ({out})"


def run(args) -> int:
    """Every option is checked before the images are loaded or anything is written (the library's
    checks, named by option: ``--limit must be >= 1``); Ctrl-C stops the workers at once."""
    import time

    from ._common import option_names, preload

    preload("torch", "numpy", "safetensors.torch", "tqdm.auto", "weightspace.data",
            *(["sklearn.datasets"] if args.source == "digits" else []))
    from ..data.recipes import make_inr_zoo, recipe_for
    from ..data.shards import writing_part

    part = writer_part(args.shard)
    t0 = time.perf_counter()
    with option_names(args), writing_part(part):
        manifest = make_inr_zoo(recipe_for(args.source), args.out, root=args.root, seed=args.seed, limit=args.limit,
                                shard_size=args.shard_size, workers=args.workers, threads=args.threads,
                                progress=not args.no_progress, max_shards=args.max_shards, steps=args.steps,
                                lr=args.lr, target_psnr=args.target_psnr, hidden=args.hidden, w0=args.w0,
                                batch_size=args.batch_size)
    dt = time.perf_counter() - t0
    if not manifest.get("complete"):
        print(partial_message(part, args.max_shards, args.out))
        return 0
    s = manifest["summary"]
    print(f"{manifest['num_items']} INRs in {args.out} (this run: {dt:.1f} s); PSNR mean {s['mean_psnr']:.2f} dB, "
          f"min {s['min_psnr']:.2f} dB; {100 * (s['fraction_at_target'] or 0):.1f}% "
          f"reached the target; mean {s['mean_steps']:.0f} steps")
    print("splits: " + ", ".join(f"{k} {len(v)}" for k, v in manifest["splits"].items()))
    return 0
