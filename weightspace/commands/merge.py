"""weightspace merge: align and merge checkpoints of one architecture.

  weightspace merge A.safetensors B.safetensors --model MODULE:FACTORY --method weight-matching \\
      --out merged.safetensors --plot barrier.png [--data digits]

Checkpoints are loaded as data only (safetensors, or torch files with weights_only=True). The model
factory builds the architecture (MODULE:FACTORY, called with --model-kwargs); it is traced once to
get the weight-space spec that every method reads.

Hugging Face fine-tunes: --model hf:FOLDER builds the architecture from a model folder's config.json
(random weights, nothing downloaded), and each checkpoint may be a folder written by save_pretrained
(tied weights stored once are filled back); token ids are made up for tracing:
  weightspace merge ft-a/ ft-b/ --base base/ --model hf:base/ --method ties --out m.safetensors

With --data holding targets, the loss and accuracy along the linear path are printed before and
after alignment (the barrier table) and --plot draws them.

Methods for two networks (B is aligned to A, then (1 - alpha) A + alpha B is written):
  naive               no alignment: plain interpolation
  weight-matching     Git Re-Basin weight matching: coordinate descent over the permutation groups
                      with exact linear assignment (heads included); data-free, fast
  activation-matching match neurons by the correlation of their activations on --data
  ste                 Git Re-Basin straight-through estimator: learn the permutation through the
                      task loss of the midpoint (--data with targets; --steps)
  sinkhorn            Sinkhorn Re-Basin: soft permutations trained on the L2 distance, rounded
                      (data-free; --steps)
Methods for two or more networks:
  merge-many          MergeMany: align every network to the mean of the others until stable,
                      write the average
  average             weighted average without alignment (--weights)
Methods for fine-tunes of one base (--base BASE; the positional checkpoints are the fine-tunes):
  task-arithmetic     base + scale * sum of task vectors (--scale, --weights)
  ties                TIES: trim to --density, elect signs, disjoint mean
  dare                DARE: drop task-vector entries with --drop-rate and rescale; --combine sum|ties

After an alignment method, --reset-bn recomputes BatchNorm statistics from --data and --repair applies
REPAIR (the merged network's neurons get the endpoints' mean and standard deviation).

--data: 'digits' (scikit-learn digits, [N, 64]), 'digits-images' ([N, 1, 8, 8]), or a .safetensors /
.pt file with tensors 'x' (inputs) and optionally 'y' (targets).

Everything is checked before any work: the options, the checkpoints (finite floating-point weights of
the model's shapes) and --data (targets the model's outputs can be scored on). Checkpoints of any float
dtypes are merged in float32 (float64 when one is) and the result is written in the first checkpoint's
dtypes (--base's for the task methods), never when it holds NaN or Inf.
"""
from __future__ import annotations

import time

from ..errors import UsageError

# torch is imported only when the command runs (every command's --help and parse stay fast)
ALIGN = ["naive", "weight-matching", "activation-matching", "ste", "sinkhorn"]
MANY = ["merge-many", "average"]
TASK = ["task-arithmetic", "ties", "dare"]

HELP = "align and merge checkpoints (Git Re-Basin, REPAIR, TIES, DARE, ...) and print the barrier"


def add_arguments(p):
    p.add_argument("checkpoints", nargs="+", help="checkpoints to merge (.safetensors or torch files)")
    p.add_argument("--model", required=True, help="MODULE:FACTORY building the architecture, or hf:FOLDER (a Hugging "
                   "Face model folder: the architecture from its config.json)")
    p.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments for the factory")
    p.add_argument("--method", default="weight-matching", choices=ALIGN + MANY + TASK, help="see above")
    p.add_argument("--out", required=True, help="where to write the merged checkpoint")
    p.add_argument("--plot", help="write the barrier plot (PNG) here (needs --data with targets)")
    p.add_argument("--data", help="'digits', 'digits-images' or a file with tensors x (and y)")
    p.add_argument("--input-shape", help="example input shape for tracing when there is no --data, e.g. 2,64")
    p.add_argument("--alpha", type=float, default=0.5, help="interpolation weight of B (default 0.5)")
    p.add_argument("--reset-bn", action="store_true", help="reset BatchNorm statistics from --data after merging")
    p.add_argument("--repair", action="store_true", help="apply REPAIR with --data after merging")
    p.add_argument("--base", help="base checkpoint for task-arithmetic / ties / dare")
    p.add_argument("--weights", help="comma-separated weights per checkpoint (average, task methods)")
    p.add_argument("--scale", type=float, default=1.0, help="task-vector scale (task methods)")
    p.add_argument("--density", type=float, default=0.2, help="fraction kept by TIES trimming")
    p.add_argument("--drop-rate", type=float, default=0.9, help="DARE drop probability")
    p.add_argument("--combine", default="sum", choices=["sum", "ties"], help="how DARE combines task vectors")
    p.add_argument("--steps", type=int, default=200, help="optimization steps of ste / sinkhorn")
    p.add_argument("--points", type=int, default=11, help="points on the barrier curve (at least 3)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    """Check every input (:mod:`._merge_inputs`), merge, write, report. User errors propagate as
    ``UsageError`` / ``CheckpointError`` / ``SpecError``; ``weightspace.cli.main`` prints them as one line."""
    import torch

    from .. import align, merge
    from ..io import save_checkpoint
    from ..spec import WeightSpaceSpec
    from ..symmetry import act
    from ..symmetry.extended import symmetry_records
    from . import _hf
    from . import _merge_inputs as inputs

    inputs.check_arguments(args)
    weights = inputs.parse_weights(args)
    hf = _hf.is_hf(args.model)
    model = _hf.build_hf_model(args.model) if hf else inputs.build_model(args.model, args.model_kwargs)
    paths = args.checkpoints + ([args.base] if args.base else [])
    loaded = inputs.load_states(paths)
    if hf:
        loaded = [_hf.fill_tied(st, model) for st in loaded]
    data = inputs.load_data(args.data)

    dtype = inputs.compute_dtype(model, loaded)
    model = model.to(dtype)
    model_state = model.state_dict()
    reference = loaded[-1] if args.base else loaded[0]          # whose dtypes the merged checkpoint gets
    if data is not None:                                       # floating inputs and targets in the compute dtype
        data = tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in data)
        example = data[0][:2]
    elif hf and args.input_shape is None:
        example = _hf.example_input(model, dtype, args.seed)
    else:
        shape = inputs.parse_input_shape(args.input_shape)
        example = torch.randn(*shape, generator=torch.Generator().manual_seed(args.seed), dtype=dtype)
    spec = WeightSpaceSpec.from_module(model, example)
    for path, st in zip(paths, loaded):
        spec.check_state_dict(st, what=f"checkpoint {path}")
    converted = [inputs.to_dtype(st, model_state, dtype, path) for path, st in zip(paths, loaded)]
    states, base = (converted[:-1], converted[-1]) if args.base else (converted, None)
    labeled = data is not None and data[1] is not None
    if data is not None:
        inputs.check_targets(model, data, f"--data {args.data}")
    if (args.method == "ste" or args.plot) and not labeled:
        raise UsageError(f"{'--method ste' if args.method == 'ste' else '--plot'} needs targets: give a file with "
                         f"tensors 'x' and 'y', or digits", "--data")

    t0 = time.perf_counter()
    aligned_b = None
    if args.method in ALIGN:
        a, b = states
        if args.method == "naive":
            perms = None
        elif args.method == "weight-matching":
            perms = align.weight_matching(spec, a, b, seed=args.seed, progress=True)
        elif args.method == "activation-matching" and symmetry_records(spec):
            perms = align.tree_activation_matching(spec, a, b, data[0])
        elif args.method == "activation-matching":
            perms = align.activation_matching(spec, a, b, data[0], model=model, seed=args.seed, progress=True)
        elif args.method == "ste":
            perms = align.ste_matching(spec, model, a, b, data, steps=args.steps, seed=args.seed, progress=True)
        else:
            perms = align.sinkhorn_matching(spec, a, b, steps=args.steps, seed=args.seed, progress=True)
        aligned_b = b if perms is None else act(b, spec, perms)
        merged = merge.interpolate(a, aligned_b, args.alpha, spec)
        endpoints, ends_w = [a, aligned_b], (1 - args.alpha, args.alpha)
    elif args.method == "merge-many":
        result = (align.tree_merge_many(spec, states) if symmetry_records(spec)
                  else align.merge_many(spec, states, seed=args.seed, progress=True))
        merged, endpoints, ends_w = result.merged, result.aligned, None
    elif args.method == "average":
        merged, endpoints, ends_w = merge.weighted_average(states, weights, spec), states, weights
    else:
        if args.method == "task-arithmetic":
            merged = merge.task_arithmetic(base, states, args.scale, weights, spec)
        elif args.method == "ties":
            merged = merge.ties_merging(base, states, args.density, args.scale, weights, spec)
        else:
            merged = merge.dare(base, states, args.drop_rate, args.scale, weights, args.combine, args.seed, spec)
        endpoints, ends_w = states, None
    seconds = time.perf_counter() - t0
    if args.repair:
        merged = align.repair(model, merged, endpoints, data[0], weights=ends_w, spec=spec)
    elif args.reset_bn:
        merged = align.reset_bn_statistics(model, merged, data[0])
    out = save_checkpoint(inputs.finish(merged, reference, args.method), args.out,
                          metadata={"weightspace_method": args.method})
    print(f"{args.method}: {seconds:.2f} s; merged checkpoint written to {out}")

    if aligned_b is not None:
        _report_pair(args, model, spec, states, aligned_b, data, labeled, seconds)
    elif labeled:
        rows = [(p, *merge.evaluate(model, s, data)) for p, s in zip(args.checkpoints, states)]
        rows.append((f"merged ({args.method})", *merge.evaluate(model, merged, data)))
        print(f"\n{'network':40s} {'loss':>8s} {'accuracy':>9s}")
        for name, loss, acc in rows:
            print(f"{name:40s} {loss:8.4f} " + (f"{100 * acc:8.2f}%" if acc is not None else f"{'-':>9s}"))
    return 0


def _report_pair(args, model, spec, states, aligned_b, data, labeled, seconds) -> None:
    import torch

    from .. import align, merge

    a, b = states

    def dist(x, y) -> float:
        return float(torch.sqrt(sum(((x[n] - y[n]) ** 2).sum() for n in spec.weight_names
                                    if x[n].is_floating_point())))

    print(f"L2 distance between A and B: {dist(a, b):.4f} before alignment, {dist(a, aligned_b):.4f} after")
    if not labeled:
        print("(no --data with targets: no barrier table)")
        return
    n = args.points
    curves = [merge.barrier_curve(model, a, b, data, n, label="naive", spec=spec)]
    times: list = [None]
    if args.method != "naive":
        curves.append(merge.barrier_curve(model, a, aligned_b, data, n, label=args.method, spec=spec))
        times.append(seconds)
    if args.reset_bn and align.bn.batchnorm_modules(model):
        curves.append(merge.barrier_curve(model, a, aligned_b, data, n, label=f"{args.method} + BN reset", spec=spec,
                                          correct=lambda s, t: align.reset_bn_statistics(model, s, data[0])))
        times.append(None)
    if args.repair:
        stats = align.endpoint_statistics(model, [a, aligned_b], data[0], spec=spec)
        curves.append(merge.barrier_curve(model, a, aligned_b, data, n, label=f"{args.method} + REPAIR", spec=spec,
                                          correct=lambda s, t: align.repair(model, s, None, data[0], weights=(1 - t, t),
                                                                            spec=spec, statistics=stats)))
        times.append(None)
    print()
    print(merge.barrier_table(curves, times))
    if args.plot:
        path = merge.plot_barrier(curves, args.plot, title=f"{args.checkpoints[0]} -> {args.checkpoints[1]}")
        print(f"\nbarrier plot written to {path}")
