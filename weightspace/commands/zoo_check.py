"""weightspace zoo-check

Check that every shard of a zoo folder is present and whole: each shard's tensors against the sha256
stored in it and the one recorded in the manifest, its range of networks and its shapes. Names every
missing or damaged shard; exit code 0 when the zoo is whole and complete, 1 when it is not (shards
missing or damaged, or the manifest not completed yet), 2 when the folder holds no readable zoo.
Use it after a SLURM array of fit-inrs / make-zoo --shard i/n jobs, or before training on a copy.

  weightspace zoo-check datasets/mnist-inr
"""
HELP = "check that every shard of a zoo is present and whole (sha256); name what is missing"

INCOMPLETE = 1


def add_arguments(p):
    p.add_argument("path", help="zoo folder (with manifest.json)")
    p.add_argument("--list", type=int, default=20, help="name at most this many missing / damaged shards (default 20)")


def run(args) -> int:
    from ..data.integrity import check_zoo

    s = check_zoo(args.path)
    whole = s.num_shards - len(s.missing) - len(s.damaged)
    print(f"{args.path}: {whole} of {s.num_shards} shards whole, {len(s.missing)} missing, {len(s.damaged)} damaged")
    for name, start, stop in s.missing[:args.list]:
        print(f"missing: {name} (networks [{start}, {stop}))")
    for name, start, stop, why in s.damaged[:args.list]:
        print(f"damaged: {name} (networks [{start}, {stop})): {why}")
    hidden = max(0, len(s.missing) - args.list) + max(0, len(s.damaged) - args.list)
    if hidden:
        print(f"... and {hidden} more (raise --list)")
    if s.missing or s.damaged:
        print("rerun the command that wrote the zoo (the same --shard parts) to write missing shards; delete "
              "damaged ones first")
        return INCOMPLETE
    if not s.summarized:
        print("every shard is whole but the manifest is not complete (the last part was stopped before "
              "writing it): rerun the command that wrote the zoo, any --shard part, to complete it")
        return INCOMPLETE
    print("the zoo is whole and complete")
    return 0
