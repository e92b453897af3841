"""Equivariant weight-space layers: throughput and peak memory against the `nfn` package.

Forward + backward of a stack of equivariant linear layers (ReLU between, applied in place inside
each layer as UNF and NFN models do; `--relu-module` puts a separate `Pointwise(torch.relu)` after
each layer instead) on batches of SIREN 2-32-32-1 weight sets,
side by side with `nfn`'s NPLinear / HNPLinear at equal width, each configuration in a fresh
subprocess (peak RSS during the steps above the resident memory after setup). Throughput is taken
from the median of the timed steps (``--stat best``: the fastest one, the earlier setting): with the
default allocator some steps page-fault and others do not, and a training loop pays the median.

The loss is the mean of each output tensor (``--loss mean``, the default): what an invariant head's
pooling does with the last layer's output (its backward is a broadcast), so the step times the layers.
``--loss square`` (the mean square of each output, the earlier setting) adds a consumer that is not
layer work: three full-size elementwise passes on each output and a full-size gradient, on both
sides, which at 16 channels is a third of a step and compresses the ratio toward 1.
`nfn` is the NFN paper's own package; it is installed only in the benchmark's environment
(`make bench-layers`), never a dependency of weightspace. Without it, the table has our rows only.

Also: UNF on 64 ResNet-20 and 64 Transformer-block weight sets (nfn has no layer for them), and a
check that nfn's NP layer lies in the span of ours: our layer is linear in its coefficients, so the
coefficients reproducing nfn's map are found by least squares, and the residual is printed.

Allocation matters at 16 channels: a full-size feature tensor of the batch is 16 MB, above glibc's
mmap threshold, so with the default allocator every fresh one is mapped and page-faulted in, and
how often that happens swings from run to run (nfn's 2 x 16 NP figure moved between 3,100 and 5,050
nets/s across runs of one command). ``--tuned-malloc`` runs both sides with glibc keeping freed
memory (as jemalloc / tcmalloc would); ``--rounds N`` alternates N fresh runs of each side and shows
the medians, with the ratio of every round.

    python benchmarks/bench_layers.py [--quick] [--threads 2] [--tuned-malloc] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _measure import TUNED_MALLOC, measure_step


def _siren_spec():
    import torch

    import weightspace as ws
    from weightspace.models import SIREN

    return ws.WeightSpaceSpec.from_module(SIREN(2, (32, 32), 1), torch.zeros(1, 2))


def _nfn_inputs(batch, channels, gen):
    import torch
    from nfn.common import WeightSpaceFeatures as NFeat

    shapes = [(32, 2), (32, 32), (1, 32)]
    w = [torch.randn(batch, channels, *s, generator=gen, requires_grad=True) for s in shapes]
    b = [torch.randn(batch, channels, s[0], generator=gen, requires_grad=True) for s in shapes]
    return NFeat(w, b), w + b


def _nfn_stack(mode, layers, width):
    import torch
    from nfn.common import ArraySpec, NetworkSpec
    from nfn.layers import HNPLinear, NPLinear, TupleOp

    spec = NetworkSpec([ArraySpec((32, 2)), ArraySpec((32, 32)), ArraySpec((1, 32))],
                       [ArraySpec((32,)), ArraySpec((32,)), ArraySpec((1,))])
    cls = NPLinear if mode == "np" else HNPLinear
    mods, prev = [], 1
    for _ in range(layers):
        mods += [cls(spec, prev, width), TupleOp(torch.nn.ReLU())]
        prev = width
    return torch.nn.Sequential(*mods)


def _ours_stack(spec, layers, width, fused_relu=True):
    import torch

    from weightspace.nn import EquivariantLinear, Pointwise

    mods, prev = [], 1
    for _ in range(layers):     # the ReLU in place inside the layer (what UNF and NFN use), or a module
        mods += [EquivariantLinear(spec, prev, width, activation="relu")] if fused_relu else \
            [EquivariantLinear(spec, prev, width), Pointwise(torch.relu)]
        prev = width
    return torch.nn.Sequential(*mods)


def _loss(t, cfg: dict):
    return t.square().mean() if cfg.get("loss") == "square" else t.mean()


def _median_run(runs: list[dict | None]) -> dict | None:
    """The run with the median throughput (the lower middle one for an even count)."""
    runs = sorted((r for r in runs if r), key=lambda r: r["nets_per_s"])
    return runs[(len(runs) - 1) // 2] if runs else None


def run_one(cfg: dict) -> dict:
    """One configuration, in this (fresh) process: networks/s of forward + backward (the median
    step, or the best with ``stat="best"``), peak RSS."""
    res = _run_one(cfg)
    if cfg.get("stat", "median") == "median":
        res["nets_per_s"] = res["nets_per_s_median"]
    return res


def _run_one(cfg: dict) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    gen = torch.Generator().manual_seed(0)
    impl, mode, layers, width, batch = cfg["impl"], cfg["mode"], cfg["layers"], cfg["width"], cfg["batch"]
    if impl == "gemm":
        # The floor every implementation shares: the identity term's channel mixing, one [C_in, C_out]
        # matrix on every entry of every network (forward, and backward to the coefficients and, past
        # the first layer, to the input), with the fastest product we have (`channel_mix`: oneDNN's
        # 1x1 convolution on CPU). Every other basis term acts on means (32x fewer rows or less).
        from weightspace.nn.mixing import channel_mix

        entries = sum(p.numel for p in _siren_spec().params)
        widths = [1] + [width] * layers
        mats = [torch.randn(b, a, generator=gen, requires_grad=True) for a, b in zip(widths[:-1], widths[1:])]
        xs = [torch.randn(batch, entries, a, generator=gen, requires_grad=i > 0) for i, a in enumerate(widths[:-1])]

        def step():
            for x, m in zip(xs, mats):
                y = x * m[:, 0] if x.shape[-1] == 1 else channel_mix(x, m)
                y.backward(torch.ones_like(y))

        class _Params(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.mats = torch.nn.ParameterList(mats)

        return measure_step(step, _Params(), batch, cfg["repeats"])
    if impl == "nfn":
        model = _nfn_stack(mode, layers, width)

        def step():
            feats, leaves = _nfn_inputs(batch, 1, gen)
            out = model(feats)
            loss = sum(_loss(t, cfg) for t in (*out.weights, *out.biases))
            loss.backward()
    else:
        import weightspace as ws
        from weightspace.nn import UNF, WeightSpaceFeatures, io_permutable

        if cfg["arch"] == "siren":
            spec = _siren_spec()
            spec = io_permutable(spec) if mode == "np" else spec
            model = _ours_stack(spec, layers, width, fused_relu=not cfg.get("relu_module", False))

            def step():
                x = WeightSpaceFeatures(spec, {n: torch.randn(batch, 1, *spec[n].shape, generator=gen,
                                                              requires_grad=True) for n in spec.weight_names})
                out = model(x)
                sum(_loss(t, cfg) for t in out.tensors.values()).backward()
        else:
            from weightspace.models import TinyTransformer, resnet20

            if cfg["arch"] == "resnet20":
                net, x0 = resnet20(width=8), torch.zeros(1, 3, 32, 32)
            else:
                net, x0 = TinyTransformer(depth=1), torch.zeros(1, 8, 16)
            spec = ws.WeightSpaceSpec.from_module(net.eval(), x0)
            model = UNF(spec, channels=(width,) * layers, out_features=10)
            sd = {k: v.detach() for k, v in net.state_dict().items()}
            w = ws.WeightSpace.from_state_dicts([sd] * batch, spec)

            def step():
                model(w).square().mean().backward()
    return measure_step(step, model, batch, cfg["repeats"])


def in_subprocess(cfg: dict, tuned_malloc: bool = False) -> dict | None:
    env = dict(os.environ, **TUNED_MALLOC) if tuned_malloc else None
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"  ({cfg['impl']} {cfg['mode']} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else ''})")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def span_check() -> float | None:
    """Least-squares residual of nfn's NPLinear (random coefficients) in the span of our NP layer."""
    try:
        import nfn  # noqa: F401
    except ImportError:
        return None
    import torch
    from nfn.common import WeightSpaceFeatures as NFeat

    from weightspace.nn import EquivariantLinear, WeightSpaceFeatures, io_permutable

    torch.manual_seed(0)
    spec = io_permutable(_siren_spec())
    ref = _nfn_stack("np", 1, 1)[0].double()
    ours = EquivariantLinear(spec, 1, 1).double()
    params = list(ours.parameters())
    names = spec.weight_names
    gen = torch.Generator().manual_seed(1)
    xs = [{n: torch.randn(4, 1, *spec[n].shape, generator=gen, dtype=torch.float64) for n in names}
          for _ in range(6)]

    def flat_ref(x):
        out = ref(NFeat([x[n] for n in names[0::2]], [x[n] for n in names[1::2]]))
        return torch.cat([t.reshape(-1) for pair in zip(out.weights, out.biases) for t in pair])

    def flat_ours(x):
        out = ours(WeightSpaceFeatures(spec, x))
        return torch.cat([out[n].reshape(-1) for n in names])

    target = torch.cat([flat_ref(x) for x in xs]).detach()
    cols = []
    with torch.no_grad():
        for p in params:
            p.zero_()
        for p in params:
            for k in range(p.numel()):
                p.view(-1)[k] = 1.0
                cols.append(torch.cat([flat_ours(x) for x in xs]))
                p.view(-1)[k] = 0.0
    basis = torch.stack(cols, 1)
    coef = torch.linalg.lstsq(basis, target).solution
    return float((basis @ coef - target).abs().max() / target.abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small batches, fewer repeats")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wide-only", action="store_true", help="only the 3 x 512 rows and the channel-mixing bound")
    ap.add_argument("--relu-module", action="store_true",
                    help="our rows with a separate Pointwise(torch.relu) module after each layer")
    ap.add_argument("--loss", choices=("mean", "square"), default="mean",
                    help="mean of each output (a pooling head's consumer; default) or its mean square")
    ap.add_argument("--tuned-malloc", action="store_true",
                    help="both sides with glibc keeping freed memory (no page faults per fresh tensor; see above)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternating nfn / ours runs per SIREN configuration; the table shows medians")
    ap.add_argument("--stat", choices=("median", "best"), default="median",
                    help="each configuration's step time: the median of its timed steps (default) or the best")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    try:
        import nfn  # noqa: F401
        have_nfn = True
    except ImportError:
        have_nfn = False
        print("(nfn is not installed in this environment: `make bench-layers` builds one that has it)")
    rows, spread = [], {}
    sizes = [(2, 16, 256, 20)] + ([] if args.quick else [(3, 512, 256, 1)])
    if args.wide_only:
        sizes = [(3, 512, 256, 1)]
    for layers, width, batch, repeats in sizes:
        for mode in ("np", "hnp"):
            base = {"mode": mode, "layers": layers, "width": width, "batch": batch, "repeats": repeats,
                    "threads": args.threads, "arch": "siren", "relu_module": args.relu_module,
                    "loss": args.loss, "stat": args.stat}
            refs, ourss = [], []
            for _ in range(args.rounds):        # alternating, so that a neighbour's load hits both sides
                refs.append(in_subprocess({**base, "impl": "nfn"}, args.tuned_malloc) if have_nfn else None)
                ourss.append(in_subprocess({**base, "impl": "ours"}, args.tuned_malloc))
            name = f"SIREN 2-32-32-1, {layers} x {width} ch, {mode.upper()}, batch {batch}"
            rows.append((name, _median_run(ourss), _median_run(refs)))
            if args.rounds > 1 and all(refs) and all(ourss):
                spread[name] = [o["nets_per_s"] / r["nets_per_s"] for o, r in zip(ourss, refs)]
        if width >= 128:        # where channel mixing dominates: how far from it both implementations are
            bound = in_subprocess({**base, "impl": "gemm"}, args.tuned_malloc)
            rows.append((f"  identity-term channel mixing alone, {layers} x {width}", bound, None))
    for arch in () if args.wide_only else ("resnet20", "transformer"):
        cfg = {"impl": "ours", "mode": "unf", "layers": 2, "width": 16, "batch": 16 if args.quick else 64,
               "repeats": 2, "threads": args.threads, "arch": arch, "stat": args.stat}
        name = f"UNF 2 x 16 ch on {cfg['batch']} {arch} weight sets"
        rows.append((name, in_subprocess(cfg, args.tuned_malloc), None))
    head = f"| {'configuration':48s} | {'ours nets/s':>11s} | {'ours peak MB':>12s} | {'nfn nets/s':>10s} | " \
           f"{'nfn peak MB':>11s} | {'speed ratio':>11s} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for name, ours, ref in rows:
        o_s = f"{ours['nets_per_s']:,.1f}" if ours else "-"
        o_m = f"{ours['peak_mb']:,.0f}" if ours else "-"
        r_s = f"{ref['nets_per_s']:,.1f}" if ref else "-"
        r_m = f"{ref['peak_mb']:,.0f}" if ref else "-"
        ratio = f"{ours['nets_per_s'] / ref['nets_per_s']:.2f}x" if ours and ref else "-"
        print(f"| {name:48s} | {o_s:>11s} | {o_m:>12s} | {r_s:>10s} | {r_m:>11s} | {ratio:>11s} |")
    gemm = [r for r in rows if r[0].startswith("  identity-term") and r[1]]
    if gemm:
        bound = gemm[0][1]["nets_per_s"]
        refs = [r[2]["nets_per_s"] for r in rows if "512" in r[0] and r[2]]
        if refs:
            print(f"\nAt {gemm[0][0].split(',')[-1].strip()}, the channel mixing alone (matrix products every "
                  f"implementation must do) allows {bound:.1f} nets/s; 1.5x nfn would be "
                  f"{1.5 * min(refs):.1f}-{1.5 * max(refs):.1f} nets/s.")
    for name, ratios in spread.items():
        print(f"{name}: speed ratio per round {', '.join(f'{r:.2f}x' for r in ratios)} (table: medians)")
    res = span_check()
    if res is not None:
        print(f"\nnfn's NPLinear in the span of our NP layer: relative least-squares residual {res:.2e}")
    print(f"(threads {args.threads}, loss {args.loss}, glibc malloc "
          f"{'tuned (MALLOC_MMAP_MAX_=0)' if args.tuned_malloc else 'default'}, {args.rounds} round(s), "
          f"{args.stat} step, "
          f"torch {__import__('torch').__version__}, pid {os.getpid()})")


if __name__ == "__main__":
    main()
