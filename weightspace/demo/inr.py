"""An INR zoo: one SIREN per digit image, fit many at once."""
from __future__ import annotations

import time
from pathlib import Path

import torch


def run(out_dir: Path, n: int = 400, workers: int = 2) -> dict:
    from ..data import fit_inrs, load_images, render_inrs

    images, labels = load_images("digits")
    images, labels = images[:n], labels[:n]
    print(f"Fitting {n} SIRENs 2-32-32-1 (w0 = 30) to scikit-learn digits (8x8), the MNIST-INR recipe: "
          f"Adam 5e-4, up to 1,000 steps, each INR stops at 40 dB; {workers} worker processes, 1 thread each.")
    t0 = time.perf_counter()
    fit = fit_inrs(images, workers=workers)
    seconds = time.perf_counter() - t0
    psnr, steps = fit.psnr, fit.steps.float()
    q = torch.quantile(psnr, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])).tolist()
    print(f"\n{n} INRs in {seconds:.1f} s: {n / seconds:.1f} INRs/s (including worker start-up), "
          f"{steps.sum().item() / seconds:,.0f} INR-steps/s")
    print(f"PSNR (dB): min {q[0]:.2f}, 10% {q[1]:.2f}, median {q[2]:.2f}, 90% {q[3]:.2f}, max {q[4]:.2f}; "
          f"{(psnr >= 40).float().mean().item() * 100:.1f}% reached 40 dB")
    print(f"Steps to 40 dB: mean {steps.mean().item():.0f}, median {steps.median().item():.0f}, "
          f"max {steps.max().item():.0f}")
    edges = [40, 40.5, 41, 42, 45, float("inf")]
    counts = [int(((psnr >= a) & (psnr < b)).sum()) for a, b in zip(edges[:-1], edges[1:])]
    for (a, b), c in zip(zip(edges[:-1], edges[1:]), counts):
        label = f"[{a:g}, {b:g})" if b != float("inf") else f">= {a:g}"
        print(f"  {label:>12s} dB  {'#' * max(0, round(60 * c / n))} {c}")
    rec = render_inrs(fit.weights, (8, 8), 30.0, 0.5)[:, 0]
    fine = render_inrs(fit.weights, (64, 64), 30.0, 0.5)[:, 0]
    path = Path(out_dir) / "inr_reconstructions.png"
    _plot(images, rec, fine, labels, psnr, path)
    print(f"\nOriginals, their INRs on the 8x8 grid and the same INRs drawn at 64x64 (between its 64 sample "
          f"points a w0 = 30 SIREN is free to oscillate; the recipe is tuned for 28x28 images): {path.resolve()}")
    return {"n": n, "seconds": seconds, "inrs_per_s": n / seconds, "psnr": psnr, "path": path}


def _plot(images, rec, fine, labels, psnr, path: Path, k: int = 8) -> None:
    from matplotlib.figure import Figure          # drawn without pyplot: no backend or global state touched

    fig = Figure(figsize=(1.6 * k, 5.2))
    axes = fig.subplots(3, k)
    rows = [("original 8x8", images), ("INR on 8x8", rec), ("INR at 64x64", fine)]
    for r, (name, imgs) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(imgs[c].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0:
                ax.set_title(f"digit {int(labels[c])}", fontsize=9)
            if r == 1:
                ax.set_title(f"{psnr[c].item():.1f} dB", fontsize=8)
    fig.suptitle("SIREN INRs of scikit-learn digits (fit with weightspace.fit_inrs)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
