"""Batched SIREN fitting: exact gradients, the SIREN init, Adam, PSNR floors, batch independence."""
from __future__ import annotations

import math
import time

import pytest
import torch

from weightspace.data import coordinate_grid, fit_inrs, load_images, psnr_from_mse, render_inrs
from weightspace.data.adam import BiasCorrections, adam_step
from weightspace.data.inr import init_siren_rows, inr_seed
from weightspace.data.siren_batch import SirenBatch, SirenLayout
from weightspace.models import SIREN


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops run faster and steadier on one thread (the CI machine's 2 cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    x, y = load_images("digits")
    return x, y


@pytest.mark.parametrize("hidden,C", [((32, 32), 1), ((16,), 1), ((8, 12, 10), 3), ((8,), 2)])
def test_handwritten_gradients_equal_autograd(hidden, C):
    torch.manual_seed(0)
    H, W, n = 5, 7, 4
    lay = SirenLayout(hidden, C)
    mods = [SIREN(2, hidden, C, w0=30.0, output_offset=0.5).double() for _ in range(n)]
    sd = {k: torch.stack([m.state_dict()[k] for m in mods]) for k in mods[0].state_dict()}
    flat = lay.from_state_tensors(sd)
    tgt = torch.rand(n, C, H * W, dtype=torch.float64)
    grad = torch.zeros_like(flat)
    mse = SirenBatch(lay, (H, W), 6, 30.0, dtype=torch.float64).loss_and_grad(flat, tgt - 0.5, grad)
    coords = coordinate_grid(H, W, torch.float64)
    for i, m in enumerate(mods):
        loss = ((m(coords).T - tgt[i]) ** 2).mean()
        m.zero_grad()
        loss.backward()
        ref = lay.from_state_tensors({k: p.grad[None] for k, p in m.named_parameters()})[0]
        assert abs(mse[i].item() - loss.item()) < 1e-12
        assert torch.allclose(grad[i], ref, rtol=1e-9, atol=1e-12)


def test_init_is_the_siren_paper_init():
    lay = SirenLayout((32, 32), 1)
    row = torch.empty(1, lay.numel)
    init_siren_rows(row, lay, [7], 3, 30.0)
    m = SIREN(w0=30.0)
    m.reset_parameters(torch.Generator().manual_seed(inr_seed(3, 7)))
    got = lay.state_tensors(row)
    assert all(torch.equal(got[k][0], v) for k, v in m.state_dict().items())
    assert got["layers.0.weight"].abs().max() <= 0.5          # U(-1/in, 1/in) with in = 2
    assert inr_seed(3, 7) != inr_seed(7, 3) and inr_seed(0, 1) != inr_seed(1, 0)


def test_batched_adam_equals_torch_adam_bitwise():
    torch.manual_seed(0)
    p0 = torch.randn(3, 20)
    ps = [torch.nn.Parameter(p0[i].clone()) for i in range(3)]
    opts = [torch.optim.Adam([p], lr=5e-4) for p in ps]
    P, m, v = p0.clone(), torch.zeros(3, 20), torch.zeros(3, 20)
    P2, m2, v2 = p0.clone(), torch.zeros(3, 20), torch.zeros(3, 20)
    tables = BiasCorrections(5e-4, (0.9, 0.999), 30)
    step = torch.tensor([0, 0, 0])
    for k in range(30):
        g = torch.randn(3, 20)
        live = [0, 1, 2] if k >= 10 else [0, 1]            # row 2 joins late: its own bias correction
        for i in live:
            ps[i].grad = g[i].clone()
            opts[i].step()
        rows = torch.tensor(live)
        step[rows] += 1
        sub = P[rows], m[rows], v[rows]
        adam_step(sub[0], g[rows], sub[1], sub[2], step[rows], 5e-4)
        P[rows], m[rows], v[rows] = sub
        sub = P2[rows], m2[rows], v2[rows]
        adam_step(sub[0], g[rows], sub[1], sub[2], step[rows], 5e-4, tables=tables)
        P2[rows], m2[rows], v2[rows] = sub
    for i in range(3):
        assert torch.equal(P[i], ps[i].detach()) and torch.equal(P2[i], ps[i].detach())


def test_fitting_reaches_the_psnr_floor_on_digits_in_seconds(digits):
    x, _ = digits
    t0 = time.perf_counter()
    fit = fit_inrs(x[:32])                                  # the MNIST-INR recipe: stop at 40 dB
    seconds = time.perf_counter() - t0
    assert fit.psnr.min() >= 40.0
    assert (fit.steps < 1000).all()
    assert fit.weights.batch_size == 32 and set(fit.weights.tensors) == set(SIREN().state_dict())
    assert seconds < 30, f"32 digits INRs took {seconds:.1f} s"
    # the reconstructions, drawn by an independent forward pass, have the reported PSNR
    rec = render_inrs(fit.weights, (8, 8), 30.0, 0.5)[:, 0]
    psnr = psnr_from_mse(((rec - x[:32]) ** 2).mean((1, 2)))
    assert torch.allclose(psnr, fit.psnr, atol=1e-3)


def test_fixed_budget_without_early_stop(digits):
    x, _ = digits
    fit = fit_inrs(x[:8], steps=300, target_psnr=None)
    assert (fit.steps == 300).all()
    assert fit.psnr.mean() > 50                              # far past the 40 dB stop when let run


def test_batched_and_one_at_a_time_agree(digits):
    x, _ = digits
    imgs = x[100:112]
    together = fit_inrs(imgs, steps=150, seed=5, indices=range(100, 112))
    other_batch = fit_inrs(imgs, steps=150, seed=5, indices=range(100, 112), batch_size=5)
    for i in range(0, 12, 5):
        alone = fit_inrs(imgs[i:i + 1], steps=150, seed=5, indices=[100 + i])
        assert alone.steps[0] == together.steps[i]
        for k, t in together.weights.items():
            assert torch.allclose(alone.weights[k][0], t[i], atol=1e-5), k
    assert torch.equal(other_batch.steps, together.steps)
    assert torch.allclose(other_batch.psnr, together.psnr, atol=1e-3)


def test_two_worker_processes_give_the_same_fit(digits):
    x, _ = digits
    a = fit_inrs(x[:10], steps=100)
    b = fit_inrs(x[:10], steps=100, workers=2)
    assert torch.equal(a.steps, b.steps)
    assert all(torch.allclose(a.weights[k], b.weights[k], atol=1e-6) for k in a.weights.tensors)


def test_agrees_with_a_plain_autograd_loop(digits):
    """The hand-written batched fitter follows torch.optim.Adam + autograd on the SIREN module."""
    x, _ = digits
    steps = 40
    fit = fit_inrs(x[:3], steps=steps, target_psnr=None, seed=1)
    coords = coordinate_grid(8, 8)
    for i in range(3):
        m = SIREN(w0=30.0, output_offset=0.5)
        m.reset_parameters(torch.Generator().manual_seed(inr_seed(1, i)))
        opt = torch.optim.Adam(m.parameters(), lr=5e-4)
        target = x[i].reshape(-1, 1)
        for _ in range(steps):
            loss = ((m(coords) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            ref_psnr = -10 * math.log10(((m(coords) - target) ** 2).mean().item())
        assert abs(ref_psnr - fit.psnr[i].item()) < 0.05
        for k, v in m.state_dict().items():
            assert torch.allclose(fit.weights[k][i], v, rtol=1e-3, atol=1e-4), k


def test_colour_images_and_input_checks():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 8), torch.linspace(0, 1, 8), indexing="ij")
    imgs = torch.stack([torch.stack([xx, yy, (xx + yy) / 2]) * torch.rand(3, 1, 1, generator=g) for _ in range(2)])
    fit = fit_inrs(imgs, steps=200, target_psnr=None)
    assert fit.weights["layers.2.weight"].shape == (2, 3, 32)
    assert fit.psnr.min() > 35
    assert fit.render().shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_inrs(imgs * 255)
    with pytest.raises(ValueError, match="shape"):
        fit_inrs(torch.rand(8, 8))


@pytest.mark.parametrize("kwargs,name", [
    (dict(hidden=(0,)), "hidden"), (dict(hidden=()), "hidden"), (dict(w0=0.0), "w0"), (dict(w0=-30.0), "w0"),
    (dict(lr=float("nan")), "lr"), (dict(lr=0.0), "lr"), (dict(steps=0), "steps"), (dict(batch_size=0), "batch_size"),
    (dict(seed=-1), "seed"), (dict(target_psnr=float("inf")), "target_psnr"), (dict(betas=(0.9, 1.0)), "betas"),
    (dict(eps=float("nan")), "eps"), (dict(first_layer_init="zeros"), "first_layer_init"), (dict(workers=0), "workers"),
])
def test_bad_hyperparameters_are_refused_before_fitting(digits, kwargs, name):
    from weightspace.errors import UsageError

    with pytest.raises(UsageError, match=name) as e:
        fit_inrs(digits[0][:2], steps=kwargs.pop("steps", 5), **kwargs)
    assert e.value.where == name


def test_images_without_pixels_are_refused():
    from weightspace.errors import UsageError

    with pytest.raises(UsageError, match=r"no pixels: shape \(3, 1, 8, 0\)"):
        fit_inrs(torch.rand(3, 8, 0), steps=5)


def test_bad_fit_arguments_write_no_zoo(tmp_path):
    from weightspace.data import make_inr_zoo
    from weightspace.errors import UsageError

    for kwargs, name in ((dict(lr=float("nan")), "lr"), (dict(limit=-5), "limit"), (dict(shard_size=0), "shard_size"),
                         (dict(hidden=(0,)), "hidden"), (dict(max_shards=0), "max_shards")):
        with pytest.raises(UsageError) as e:
            make_inr_zoo("digits-inr", tmp_path / "zoo", workers=1, progress=False, **{"limit": 4, **kwargs})
        assert e.value.where == name
    assert not (tmp_path / "zoo").exists()


def test_worker_pool_ignores_ctrl_c_and_an_exception_ends_its_workers_at_once(digits):
    """Ctrl-C is the parent's to handle: workers ignore SIGINT, and an exception (KeyboardInterrupt
    included) terminates them instead of waiting for their fits (which used to hang ``fit-inrs``)."""
    import signal

    from weightspace.data import FitWorkers

    kw = dict(steps=50_000, hidden=(32, 32), w0=30.0, lr=5e-4, seed=0, target_psnr=None, output_offset=0.5,
              first_layer_init="siren", batch_size=8, betas=(0.9, 0.999), eps=1e-8)
    with pytest.raises(KeyboardInterrupt):
        with FitWorkers(2) as pool:
            assert pool._pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
            for _ in range(2):
                pool.submit(digits[0][:8].unsqueeze(1), torch.arange(8), kw)     # minutes of work each
            procs = list(pool._pool._processes.values())
            time.sleep(0.3)
            t0 = time.monotonic()
            raise KeyboardInterrupt
    assert time.monotonic() - t0 < 5
    assert procs and not any(p.is_alive() for p in procs)
