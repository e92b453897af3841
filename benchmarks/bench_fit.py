"""INR fitting benchmark: the batched fitter against a straightforward per-INR loop, in the same run.

Rows (same images, same initializations, same number of Adam steps, no early stop):

* **per-INR loop**: the obvious code, one ``weightspace.models.SIREN`` + ``torch.optim.Adam`` + autograd
  per image, one image after another;
* **plain batched bmm**: all INRs of a batch as ``[N, out, in]`` tensors, ``torch.bmm`` forward,
  autograd backward, ``torch.optim.Adam`` on the stacked tensors (what one writes first when batching);
* **fit_inrs**: this library's fitter (hand-written batched gradients, separable first layer, fused
  buffers, per-row Adam), on one core and in two worker processes; once more on one core with its C
  kernels switched off (``weightspace.data.c_kernels``: fused sin/cos and first layer), torch ops only.

Throughput is INRs/s at the fixed step budget and achieved GFLOP/s, counting the dense-equivalent
matrix FLOPs of a plain forward + backward pass (``SirenLayout.flops_per_step``), against an fp32
2048x2048 matmul measured in the same run with the same number of threads. Then the recipe run
(early stop at 40 dB, up to 1,000 steps) measures the zoo throughput and extrapolates to the 70,000
MNIST INRs, and a last table compares first-layer initializations.

Run: ``python benchmarks/bench_fit.py [--root ../shared/data/mnist]`` (``--quick`` for a smoke run).
Without MNIST files it uses scikit-learn digits (8x8), and says so.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from weightspace.data import c_kernels, coordinate_grid, fit_inrs, load_images
from weightspace.data.inr import inr_seed
from weightspace.data.siren_batch import SirenLayout
from weightspace.models import SIREN

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def matmul_gflops(threads: int, n: int = 2048, repeat: int = 5) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(before)
    return 2 * n ** 3 / best / 1e9


def per_inr_loop(images: torch.Tensor, steps: int, lr: float, seed: int) -> tuple[float, torch.Tensor]:
    """One SIREN module, torch.optim.Adam and autograd per image; returns (seconds, psnr [N])."""
    N, H, W = images.shape
    coords = coordinate_grid(H, W)
    psnr = torch.empty(N)
    t0 = time.perf_counter()
    for i in range(N):
        model = SIREN(w0=30.0, output_offset=0.5)
        model.reset_parameters(torch.Generator().manual_seed(inr_seed(seed, i)))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        target = images[i].reshape(-1, 1)
        for _ in range(steps):
            loss = ((model(coords) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            psnr[i] = -10 * torch.log10(((model(coords) - target) ** 2).mean())
    return time.perf_counter() - t0, psnr


def plain_batched(images: torch.Tensor, steps: int, lr: float, seed: int) -> tuple[float, torch.Tensor]:
    """[N, out, in] weights, bmm forward, autograd backward, torch.optim.Adam on the stacked tensors."""
    N, H, W = images.shape
    coords = coordinate_grid(H, W).expand(N, -1, -1)                   # [N, P, 2]
    mods = []
    for i in range(N):
        m = SIREN(w0=30.0, output_offset=0.5)
        m.reset_parameters(torch.Generator().manual_seed(inr_seed(seed, i)))
        mods.append(m.state_dict())
    params = [torch.stack([sd[f"layers.{k}.{t}"] for sd in mods]).requires_grad_()
              for k in range(3) for t in ("weight", "bias")]
    opt = torch.optim.Adam(params, lr=lr)
    target = images.reshape(N, -1, 1)

    def forward():
        h = coords
        for k in range(3):
            h = torch.baddbmm(params[2 * k + 1].unsqueeze(1), h, params[2 * k].transpose(1, 2))
            if k < 2:
                h = torch.sin(30.0 * h)
        return h + 0.5

    t0 = time.perf_counter()
    for _ in range(steps):
        loss = ((forward() - target) ** 2).mean((1, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        psnr = -10 * torch.log10(((forward() - target) ** 2).mean((1, 2)))
    return time.perf_counter() - t0, psnr


def with_threads(n, fn, *a, **k):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn(*a, **k)
    finally:
        torch.set_num_threads(before)


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(DEFAULT_ROOT), help="MNIST IDX folder (digits if absent)")
    ap.add_argument("--steps", type=int, default=500, help="fixed step budget")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--n", type=int, default=512, help="INRs for the batched rows")
    ap.add_argument("--loop-n", type=int, default=8, help="INRs for the per-INR loop")
    ap.add_argument("--recipe-n", type=int, default=1024, help="INRs for the early-stopping recipe run")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.n, args.loop_n, args.recipe_n = 100, 64, 2, 64
    root = Path(args.root)
    if (root / "train-images-idx3-ubyte.gz").is_file() or (root / "train-images-idx3-ubyte").is_file():
        images, _ = load_images("mnist", root, "train")
        data = "MNIST 28x28"
    else:
        images, _ = load_images("digits")
        data = "scikit-learn digits 8x8 (MNIST files not found)"
    H, W = images.shape[1:]
    flops = SirenLayout((32, 32), 1).flops_per_step(H * W)
    print(f"data: {data}; SIREN 2-32-32-1, w0 30, Adam lr {args.lr}; {args.steps} steps, no early stop; "
          f"{flops / 1e6:.2f} MFLOP per INR-step (dense-equivalent forward + backward)")
    print(f"machine: {torch.get_num_threads()} threads available, torch {torch.__version__}; shared CPU, so each "
          "reference is measured in this same run\n")

    peak1 = matmul_gflops(1)
    peak2 = matmul_gflops(2)
    loop_t, loop_psnr = with_threads(1, per_inr_loop, images[:args.loop_n], args.steps, args.lr, 0)
    loop2_t, loop2_psnr = with_threads(2, per_inr_loop, images[:args.loop_n], args.steps, args.lr, 0)
    nb = min(args.n, 256)
    plain_t, plain_psnr = with_threads(1, plain_batched, images[:nb], args.steps, args.lr, 0)
    fit1 = fit_inrs(images[:args.n], steps=args.steps, lr=args.lr, target_psnr=None, threads=1)
    kernels = c_kernels.available()
    before = c_kernels.set_enabled(False)
    fit0 = fit_inrs(images[:args.n], steps=args.steps, lr=args.lr, target_psnr=None, threads=1)
    c_kernels.set_enabled(before)
    fit2 = fit_inrs(images[:args.n], steps=args.steps, lr=args.lr, target_psnr=None, workers=2)
    peak1b, peak2b = matmul_gflops(1), matmul_gflops(2)
    peak1, peak2 = max(peak1, peak1b), max(peak2, peak2b)

    def row(name, cores, n, seconds, psnr, peak):
        rate = n / seconds
        gf = n * args.steps * flops / seconds / 1e9
        return [name, cores, n, f"{rate:.2f}", f"{rate / loop_rate:.1f}x", f"{psnr.mean().item():.2f}",
                f"{gf:.1f}", f"{100 * gf / peak:.0f}%"]

    loop_rate = args.loop_n / min(loop_t, loop2_t)              # the faster of the two loops
    same = fit1.psnr[:args.loop_n]
    rows = [row("per-INR loop (module + torch.optim.Adam)", 1, args.loop_n, loop_t, loop_psnr, peak1),
            row("per-INR loop, 2 threads (torch default)", 2, args.loop_n, loop2_t, loop2_psnr, peak2),
            row("plain batched bmm + autograd", 1, nb, plain_t, plain_psnr, peak1),
            row("fit_inrs, 1 process, torch ops only", 1, args.n, fit0.seconds, fit0.psnr, peak1),
            row("fit_inrs, 1 process" + ("" if kernels else " (C kernels unavailable)"), 1, args.n, fit1.seconds,
                fit1.psnr, peak1),
            row("fit_inrs, 2 worker processes", 2, args.n, fit2.seconds, fit2.psnr, peak2)]
    print(f"Fixed budget: {args.steps} Adam steps per INR")
    table(rows, ["method", "cores", "INRs", "INRs/s", "vs loop", "mean PSNR dB", "GFLOP/s", "of matmul"])
    print("'vs loop' is relative to the faster per-INR loop row")
    print(f"\nfp32 2048x2048 matmul in this run: {peak1:.1f} GFLOP/s on 1 thread, {peak2:.1f} GFLOP/s on 2 threads "
          "(best of before/after)")
    print(f"equal PSNR: the same {args.loop_n} images, same inits: per-INR loop {loop_psnr.mean().item():.3f} dB, "
          f"fit_inrs {same.mean().item():.3f} dB (largest difference "
          f"{(loop_psnr - same).abs().max().item():.3f} dB)")

    # --- the recipe: early stop at 40 dB, up to 1,000 steps
    rec = fit_inrs(images[:args.recipe_n], workers=2)
    rate = args.recipe_n / rec.seconds
    print(f"\nRecipe (stop at 40 dB, up to 1,000 steps, lr 5e-4), {args.recipe_n} INRs, 2 worker processes: "
          f"{rate:.2f} INRs/s, mean PSNR {rec.psnr.mean().item():.2f} dB, "
          f"{(rec.psnr >= 40).float().mean().item() * 100:.1f}% at 40 dB, "
          f"mean {rec.steps.float().mean().item():.0f} steps")
    if H == 28:
        hours = 70000 / rate / 3600
        print(f"  -> extrapolated full MNIST-INR zoo (70,000 INRs): {hours:.2f} h on this machine "
              f"({'within' if hours <= 2 else 'over'} the 2 h target)")

    # --- first-layer initialization at 500 steps, lr 1e-3 (the comparison)
    k = min(64, args.n)
    rows = []
    for init in ("siren", "hidden"):
        f = fit_inrs(images[:k], steps=args.steps, lr=1e-3, target_psnr=None, first_layer_init=init, workers=2)
        rows.append([init,
                     "U(-1/in, 1/in) (SIREN paper)" if init == "siren" else "U(-sqrt(6/in)/w0, ...) like later layers",
                     f"{f.psnr.mean().item():.2f}", f"{f.psnr.min().item():.2f}"])
    print(f"\nFirst-layer initialization, {k} INRs, {args.steps} steps, lr 1e-3, no early stop")
    table(rows, ["first_layer_init", "first layer weights", "mean PSNR dB", "min PSNR dB"])


if __name__ == "__main__":
    main()
