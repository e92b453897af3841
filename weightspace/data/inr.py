"""Fit one SIREN per image, many at once: ``fit_inrs``.

The default recipe is the MNIST-INR recipe of DWSNets (Navon et al., ICML 2023), also used for the
SIREN datasets of NFN (Zhou et al., NeurIPS 2023) and by Neural Graphs (Kofinas et al., ICLR 2024):
a SIREN 2-32-32-1 with ``w0 = 30``, pixel-centre coordinates in [-1, 1], mean-squared error against
the grey values in [0, 1], Adam with learning rate 5e-4 for up to 1,000 steps, and an INR stops as
soon as it reaches 40 dB PSNR. DWSNets' INRs add 0.5 to the output (``output_offset=0.5``).
Initialization is the SIREN paper's (Sitzmann et al., NeurIPS 2020): first layer ``U(-1/in, 1/in)``,
later layers ``U(-sqrt(6/in)/w0, sqrt(6/in)/w0)``, biases ``U(-1/sqrt(in), 1/sqrt(in))`` (PyTorch's
default), exactly :meth:`weightspace.models.SIREN.reset_parameters`.

Many INRs train at once in a pool of ``batch_size`` rows (see :mod:`.siren_batch` for the batched
forward/backward with hand-written gradients); an INR leaves the pool the moment it stops and the next
image takes its row, so the pool stays full until the queue runs dry. Each INR's initialization comes
from a generator seeded by ``(seed, index)`` and its Adam state is its own, so its result does not
depend on the batch it trained in.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from ..errors import UsageError
from ..space import WeightSpace
from ..spec import WeightSpaceSpec
from . import _args
from .adam import BiasCorrections, adam_step

if TYPE_CHECKING:
    from .parallel import FitWorkers
from .siren_batch import SirenBatch, SirenLayout

FIRST_LAYER_INITS = ("siren", "hidden")


@dataclass
class INRFit:
    """Result of :func:`fit_inrs`.

    ``weights``: a :class:`WeightSpace` of N SIRENs (state-dict keys ``layers.{i}.weight`` /
    ``layers.{i}.bias`` of :class:`weightspace.models.SIREN`); ``psnr [N]``: dB of each INR against
    its image when it stopped; ``steps [N]``: Adam updates each INR received; ``recipe``: the
    hyperparameters (JSON-serializable); ``seconds``: wall time of the fit.
    """

    weights: WeightSpace
    psnr: torch.Tensor
    steps: torch.Tensor
    recipe: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.psnr)

    def render(self, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """The INRs evaluated on their pixel grid (or another size): ``[N, C, H, W]``."""
        H = height or self.recipe["grid"][0]
        W = width or self.recipe["grid"][1]
        return render_inrs(self.weights, (H, W), self.recipe["w0"], self.recipe["output_offset"])


@lru_cache(maxsize=None)
def siren_spec(hidden: tuple[int, ...] = (32, 32), out_features: int = 1) -> WeightSpaceSpec:
    """The weight-space spec of ``SIREN(2, hidden, out_features)`` (traced once per shape)."""
    from ..models import SIREN

    return WeightSpaceSpec.from_module(SIREN(2, hidden, out_features), torch.rand(4, 2))


def inr_seed(seed: int, index: int) -> int:
    """The generator seed of INR ``index`` in a fit with ``seed`` (independent streams per pair)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0])


def init_siren_rows(out: torch.Tensor, layout: SirenLayout, indices: Sequence[int], seed: int, w0: float,
                    first_layer: str = "siren") -> None:
    """Write initial parameters of INRs ``indices`` into rows of ``out [len(indices), layout.numel]``.

    ``first_layer="siren"`` is the SIREN paper's init, identical to
    ``SIREN(2, hidden, C, w0).reset_parameters(torch.Generator().manual_seed(inr_seed(seed, i)))``;
    ``"hidden"`` draws the first layer like the later ones (``U(-sqrt(6/in)/w0, ...)``), an init
    that several INR repositories use and that fits far worse at ``w0 = 30``.
    """
    if first_layer not in FIRST_LAYER_INITS:
        raise ValueError(f"first_layer must be one of {FIRST_LAYER_INITS}, got {first_layer!r}")
    widths = layout.widths
    for row, i in enumerate(indices):
        g = torch.Generator().manual_seed(inr_seed(seed, i))
        sd = {}
        for k in range(len(widths) - 1):
            fan_in, fan_out = widths[k], widths[k + 1]
            bound = 1.0 / fan_in if (k == 0 and first_layer == "siren") else math.sqrt(6.0 / fan_in) / w0
            sd[f"layers.{k}.weight"] = torch.empty(1, fan_out, fan_in).uniform_(-bound, bound, generator=g)
            b = 1 / math.sqrt(fan_in)
            sd[f"layers.{k}.bias"] = torch.empty(1, fan_out).uniform_(-b, b, generator=g)
        out[row] = layout.from_state_tensors(sd)[0]


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for signals with peak 1: ``-10 log10(mse)``."""
    return -10.0 * torch.log10(mse.clamp_min(1e-30))


def _as_images(images) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if not x.is_floating_point():
        raise TypeError(f"images must be float in [0, 1] (or uint8), got {x.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise UsageError(f"images must be [N, H, W] or [N, C, H, W], got shape {tuple(x.shape)}", "images")
    if x.shape[0] == 0:
        raise UsageError("no images given", "images")
    if x.numel() == 0:
        raise UsageError(f"images have no pixels: shape {tuple(x.shape)}", "images")
    if not torch.isfinite(x).all():
        raise UsageError("images contain NaN or inf", "images")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise UsageError(f"images must lie in [0, 1] (PSNR assumes peak 1); values span [{lo:.3g}, {hi:.3g}]")
    return x.float()


def check_fit_args(steps=1000, hidden=(32, 32), w0=30.0, lr=5e-4, seed=0, target_psnr=40.0,
                   output_offset=0.5, first_layer_init="siren", batch_size=None, betas=(0.9, 0.999),
                   eps=1e-8) -> None:
    """Refuse fitting hyperparameters that cannot work, before anything is fitted or written:
    :class:`~weightspace.errors.UsageError` naming the parameter. Counts (``steps``, every
    ``hidden`` width, ``batch_size``) must be >= 1; ``w0`` and ``lr`` finite and > 0 (``w0 = 0``
    divides by zero in the init, ``lr = nan`` fits an all-NaN zoo); ``seed`` >= 0 (numpy's seed
    sequences take no negative entropy); ``betas`` in [0, 1); ``eps`` >= 0; ``target_psnr`` and
    ``output_offset`` finite."""
    _args.count("steps", steps)
    _args.counts("hidden", hidden)
    _args.real("w0", w0, positive=True)
    _args.real("lr", lr, positive=True)
    _args.count("seed", seed, low=0)
    _args.real("target_psnr", target_psnr, optional=True)
    _args.real("output_offset", output_offset)
    _args.choice("first_layer_init", first_layer_init, FIRST_LAYER_INITS)
    _args.count("batch_size", batch_size, optional=True)
    if len(tuple(betas)) != 2:
        raise UsageError(f"betas must be two numbers, got {betas!r}", "betas")
    for b in betas:
        _args.real("betas", b, low=0.0, below=1.0)
    _args.real("eps", eps, low=0.0)


def fit_inrs(images, steps: int = 1000, hidden: Sequence[int] = (32, 32), w0: float = 30.0, lr: float = 5e-4,
             seed: int = 0, *, target_psnr: float | None = 40.0, output_offset: float = 0.5,
             first_layer_init: str = "siren", batch_size: int | None = None, indices: Sequence[int] | None = None,
             betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, workers: "int | FitWorkers" = 1,
             threads: int = 1,
             progress: bool | str = False, callback: Callable[[torch.Tensor, torch.Tensor], None] | None = None
             ) -> INRFit:
    """Fit one SIREN to each image; returns :class:`INRFit` (``.weights``, ``.psnr``, ``.steps``).

    ``images``: ``[N, H, W]`` or ``[N, C, H, W]`` in [0, 1] (uint8 is divided by 255). Each INR maps
    ``(x, y)`` (``x`` along columns, ``y`` along rows, both ``linspace(-1, 1)``) to the ``C`` values of
    its pixel. ``steps``: most Adam updates per INR; ``target_psnr``: stop an INR as soon as its PSNR
    reaches this (``None`` trains every INR for exactly ``steps``). ``indices [N]``: the global index
    of each image (default ``0..N-1``); INR ``i`` is initialized from ``(seed, indices[i])`` and trains
    on its own, so its result is the same whatever the batch, the split into workers, or the order.

    Speed: ``batch_size`` INRs train at once (default: about 12,500 pixels' worth, 16 for 28x28 images,
    which keeps the working set in cache); ``threads``: torch threads inside the fit (restored after);
    ``workers``: processes, each fitting a share of the images with ``threads`` threads (or a
    :class:`~weightspace.data.parallel.FitWorkers` pool to reuse across calls). On a shared
    CPU, one thread per process is much more robust than several OpenMP threads in one process (a
    stolen core stalls every parallel region). ``progress``: a tqdm bar with INRs/s and mean PSNR
    (a string sets its description); ``callback(indices, psnr)`` sees each group of finished INRs.
    """
    from .parallel import FitWorkers, fit_in_workers

    check_fit_args(steps, hidden, w0, lr, seed, target_psnr, output_offset, first_layer_init, batch_size, betas, eps)
    if not isinstance(workers, FitWorkers):
        _args.count("workers", workers)
    _args.count("threads", threads, low=0, optional=True)
    x = _as_images(images)
    N, C, H, W = x.shape
    hidden = tuple(int(h) for h in hidden)
    idx = torch.arange(N) if indices is None else torch.as_tensor(list(indices), dtype=torch.long)
    if idx.shape != (N,):
        raise ValueError(f"{len(idx)} indices for {N} images")
    if batch_size is None:
        batch_size = default_batch_size(H * W * C)
    kw = dict(steps=int(steps), hidden=hidden, w0=float(w0), lr=float(lr), seed=int(seed),
              target_psnr=target_psnr, output_offset=float(output_offset), first_layer_init=first_layer_init,
              batch_size=int(batch_size), betas=tuple(betas), eps=float(eps))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=N, desc=progress if isinstance(progress, str) else "fitting INRs", unit="INR",
                   dynamic_ncols=True)
    t0 = time.perf_counter()
    tally = [0, 0.0]

    def report(ids: torch.Tensor, psnr: torch.Tensor) -> None:
        tally[0] += len(ids)
        tally[1] += float(psnr.sum())
        if bar is not None:
            bar.update(len(ids))
            bar.set_postfix_str(f"{tally[0] / (time.perf_counter() - t0):.1f} INR/s, "
                                f"mean PSNR {tally[1] / tally[0]:.1f} dB")
        if callback is not None:
            callback(ids, psnr)

    try:
        if isinstance(workers, FitWorkers):
            flat, psnr, nsteps = workers.fit(x, idx, kw, report)
        elif workers <= 1 or N < 2:
            flat, psnr, nsteps = _with_threads(threads, _fit_pool, x, idx, kw, report)
        else:
            flat, psnr, nsteps = fit_in_workers(x, idx, kw, report, workers=min(int(workers), N), threads=threads)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    layout = SirenLayout(hidden, C)
    weights = WeightSpace(siren_spec(hidden, C), layout.state_tensors(flat))
    recipe = {"model": "SIREN", "hidden": list(hidden), "in_features": 2, "out_features": C, "w0": float(w0),
              "output_offset": float(output_offset), "first_layer_init": first_layer_init, "lr": float(lr),
              "betas": list(betas), "eps": float(eps), "steps": int(steps),
              "target_psnr": None if target_psnr is None else float(target_psnr), "seed": int(seed),
              "grid": [H, W], "coordinates": "x=linspace(-1,1,W) along columns (input 0), "
                                             "y=linspace(-1,1,H) along rows (input 1)",
              "loss": "mean squared error over pixels and channels, images in [0, 1]"}
    return INRFit(weights, psnr, nsteps, recipe, seconds)


def default_batch_size(pixels: int) -> int:
    """INRs per pool: a power of two near ``12,500 / pixels`` in [8, 1024] (16 for 28x28, 256 for 8x8),
    which keeps each ``[n, width, pixels]`` activation buffer near 1.6 MB, inside the CPU caches."""
    return int(min(1024, max(8, 2 ** round(math.log2(max(1.0, 12500 / pixels))))))


def _with_threads(threads: int | None, fn, *args):
    if not threads:
        return fn(*args)
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(before)


def _fit_pool(x: torch.Tensor, idx: torch.Tensor, kw: dict, report) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fitting loop in this process: ``(params [N, numel], psnr [N], steps [N])``."""
    N, C, H, W = x.shape
    layout = SirenLayout(kw["hidden"], C)
    cap = max(1, min(kw["batch_size"], N))
    kernel = SirenBatch(layout, (H, W), cap, kw["w0"])
    targets = (x.reshape(N, C, H * W) - kw["output_offset"]).contiguous()
    limit = math.inf if kw["target_psnr"] is None else float(kw["target_psnr"])
    max_steps, seed, w0 = kw["steps"], kw["seed"], kw["w0"]
    tables = BiasCorrections(kw["lr"], kw["betas"], max_steps)

    P = layout.numel
    param, grad = torch.zeros(cap, P), torch.zeros(cap, P)
    m1, m2 = torch.zeros(cap, P), torch.zeros(cap, P)
    tgt = torch.empty(cap, C, H * W)
    step = torch.zeros(cap, dtype=torch.long)
    who = torch.zeros(cap, dtype=torch.long)          # row -> position in `x`
    out_param = torch.empty(N, P)
    out_psnr = torch.empty(N)
    out_steps = torch.empty(N, dtype=torch.long)
    pending = deque(range(N))
    active = 0
    while pending or active:
        if pending and active < cap:                              # refill free rows
            new = [pending.popleft() for _ in range(min(cap - active, len(pending)))]
            rows = slice(active, active + len(new))
            init_siren_rows(param[rows], layout, idx[new].tolist(), seed, w0, kw["first_layer_init"])
            m1[rows] = 0
            m2[rows] = 0
            step[rows] = 0
            tgt[rows] = targets[new]
            who[rows] = torch.tensor(new)
            active += len(new)
        n = active
        mse = kernel.loss_and_grad(param[:n], tgt[:n], grad[:n])
        psnr = psnr_from_mse(mse)
        done = (psnr >= limit) | (step[:n] >= max_steps)
        if bool(done.any()):
            d = done.nonzero().squeeze(1)
            ids = who[d]
            out_param[ids] = param[d]
            out_psnr[ids] = psnr[d]
            out_steps[ids] = step[d]
            keep = (~done).nonzero().squeeze(1)
            active = len(keep)
            for buf in (param, grad, m1, m2, tgt, step, who):
                buf[:active] = buf[keep]
            report(idx[ids], psnr[d].clone())
        if active:
            a = slice(0, active)
            step[a] += 1
            adam_step(param[a], grad[a], m1[a], m2[a], step[a], kw["lr"], kw["betas"], kw["eps"], tables)
    return out_param, out_psnr, out_steps


def coordinate_grid(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[H * W, 2]`` coordinates of the pixel grid in row-major pixel order: ``(x, y)`` with ``x``
    along columns and ``y`` along rows, both ``linspace(-1, 1)``."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, height, dtype=dtype), torch.linspace(-1, 1, width, dtype=dtype),
                          indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], -1)


def render_inrs(weights: WeightSpace | dict, grid: tuple[int, int], w0: float = 30.0, output_offset: float = 0.5,
                batch_size: int = 256) -> torch.Tensor:
    """Evaluate SIRENs (a WeightSpace or ``{name: [N, ...]}`` with ``layers.{i}.weight/bias``) on a
    ``(H, W)`` pixel grid: ``[N, C, H, W]``. A plain batched forward, independent of the fitting code."""
    tensors = weights.tensors if isinstance(weights, WeightSpace) else weights
    H, W = grid
    coords = coordinate_grid(H, W)
    n_layers = sum(1 for k in tensors if k.endswith(".weight"))
    N = tensors["layers.0.weight"].shape[0]
    outs = []
    with torch.no_grad():
        for s in range(0, N, batch_size):
            h = coords.expand(min(batch_size, N - s), -1, -1)                 # [b, P, in]
            for k in range(n_layers):
                Wk = tensors[f"layers.{k}.weight"][s:s + batch_size].float()
                bk = tensors[f"layers.{k}.bias"][s:s + batch_size].float()
                h = torch.baddbmm(bk.unsqueeze(1), h, Wk.transpose(1, 2))
                if k < n_layers - 1:
                    h = torch.sin(w0 * h)
            outs.append((h + output_offset).transpose(1, 2).reshape(h.shape[0], -1, H, W))
    return torch.cat(outs)
