"""The SIREN fitting loop's C kernels against torch references, and the loop with them on and off."""
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from weightspace.data import c_kernels
from weightspace.data.inr import init_siren_rows
from weightspace.data.siren_batch import SirenBatch, SirenLayout

pytestmark = pytest.mark.skipif(not c_kernels.available(), reason="no working C compiler for the kernels")


@pytest.fixture
def kernels_off():
    before = c_kernels.set_enabled(False)
    yield
    c_kernels.set_enabled(before)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_sincos_matches_float64_sine_and_cosine_over_a_wide_range(scale):
    g = torch.Generator().manual_seed(0)
    z = torch.empty(5, 7, 301).uniform_(-3000 / scale, 3000 / scale, generator=g)
    z[0, 0, :5] = torch.tensor([0.0, -0.0, 1e-8, math.pi / 4 / scale, 1e4 / scale])
    x = (z * scale).double()                       # the kernel rounds scale * z to float32 as well
    h = torch.full((5, 8, 301), 7.0)               # [n, w + 1, P]: the last row must stay untouched
    zc = z.clone()
    assert c_kernels.sincos_(zc, h[:, :-1], scale)
    assert (h[:, :-1] - x.sin()).abs().max() < 2e-7
    assert (zc - x.cos()).abs().max() < 2e-7
    assert (h[:, -1] == 7.0).all()


def test_sincos_is_the_same_on_one_thread_or_several():
    z = torch.randn(9, 16, 200) * 5
    outs = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            zc, s = z.clone(), torch.empty_like(z)
            assert c_kernels.sincos_(zc, s, 30.0)
        finally:
            torch.set_num_threads(before)
        outs.append((zc, s))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_separable_outer_is_the_sum_of_two_outer_products():
    n, h, H, W = 3, 5, 6, 7
    sA, cA, sB, cB = (torch.randn(n, h, k) for k in (H, H, W, W))
    buf = torch.full((n, h + 1, H * W), -1.0)
    assert c_kernels.separable_outer(sA, cA, sB, cB, buf[:, :-1])
    ref = sA[..., :, None] * cB[..., None, :] + cA[..., :, None] * sB[..., None, :]
    torch.testing.assert_close(buf[:, :-1].view(n, h, H, W), ref)
    assert (buf[:, -1] == -1.0).all()


def test_separable_grad_equals_the_direct_sums():
    n, h, H, W = 4, 3, 5, 9
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(n, h, H, generator=g), torch.randn(n, h, W, generator=g)
    G = torch.randn(n, h, H * W, generator=g)
    x, y = torch.linspace(-1, 1, W), torch.linspace(-1, 1, H)
    out = torch.empty(n, h, 3)
    assert c_kernels.separable_grad(G, A.sin(), A.cos(), B.sin(), B.cos(), x, y, 30.0, out)
    # direct float64: cos(A[r] + B[c]) on the whole grid
    cz = torch.cos(A.double()[..., :, None] + B.double()[..., None, :])          # [n, h, H, W]
    gz = G.double().view(n, h, H, W) * cz
    ref = 30.0 * torch.stack([(gz * x.double()).sum((-1, -2)), (gz * y.double()[:, None]).sum((-1, -2)),
                              gz.sum((-1, -2))], -1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_wrappers_refuse_what_they_cannot_run(kernels_off):
    z = torch.randn(2, 3, 4)
    assert not c_kernels.sincos_(z, torch.empty_like(z), 1.0)                     # switched off
    c_kernels.set_enabled(True)
    assert not c_kernels.sincos_(z.double(), torch.empty_like(z.double()), 1.0)   # float64
    t = torch.randn(2, 4, 3).transpose(1, 2)                                      # blocks not contiguous
    assert not c_kernels.sincos_(t, torch.empty(2, 3, 4), 1.0)
    assert not c_kernels.sincos_(z, torch.empty(2, 3, 5), 1.0)                    # shapes differ
    before = z.clone()
    assert not c_kernels.separable_outer(z, z, z, z.transpose(1, 2), torch.empty(2, 3, 16))
    assert torch.equal(z, before)


@pytest.mark.parametrize("hidden,C,grid", [((32, 32), 1, (28, 28)), ((16,), 1, (8, 8)), ((8, 12, 8), 3, (5, 7))])
def test_fitting_step_agrees_with_the_torch_path(hidden, C, grid, kernels_off):
    lay = SirenLayout(hidden, C)
    n = 6
    flat = torch.empty(n, lay.numel)
    init_siren_rows(flat, lay, list(range(n)), 0, 30.0, "siren")
    target = torch.rand(n, C, grid[0] * grid[1]) - 0.5
    results = {}
    for on in (False, True):
        c_kernels.set_enabled(on)
        grad = torch.zeros_like(flat)
        mse = SirenBatch(lay, grid, n, 30.0).loss_and_grad(flat.clone(), target, grad)
        results[on] = (mse, grad)
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-7)
    g_on, g_off = results[True][1], results[False][1]
    assert (g_on - g_off).norm() <= 1e-4 * g_off.norm()


def test_without_a_working_compiler_fitting_falls_back_to_torch(monkeypatch, tmp_path):
    from weightspace.data import fit_inrs, load_images
    monkeypatch.setattr(c_kernels, "_lib", None)
    monkeypatch.setattr(c_kernels, "_tried", False)
    monkeypatch.setenv("CC", "false")                     # a "compiler" that always fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.warns(UserWarning, match="could not compile"):
        assert not c_kernels.available()
    z = torch.randn(2, 3, 4)
    assert not c_kernels.sincos_(z, torch.empty_like(z), 1.0)
    fit = fit_inrs(load_images("digits")[0][:4], steps=200)
    assert (fit.psnr > 30).all()


_CHILD = ("import torch; from weightspace.data import c_kernels; z = torch.randn(2, 3, 4); "
          "print(c_kernels.available(), c_kernels.sincos_(z, torch.empty_like(z), 1.0))")


def _kernels_in_a_child(cache):
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "WEIGHTSPACE_C_KERNELS": "1"}
    return subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)


def test_a_truncated_cached_kernel_is_rebuilt_not_loaded(tmp_path):
    """Loading a truncated library used to kill the process with SIGBUS, in every later run."""
    from weightspace.data.kernel_cache import is_verified

    first = _kernels_in_a_child(tmp_path)
    assert first.stdout.split() == ["True", "True"], first.stderr
    (lib,) = (tmp_path / "weightspace" / "kernels").glob("siren-*.so")
    size = lib.stat().st_size
    lib.write_bytes(lib.read_bytes()[: size // 2])
    again = _kernels_in_a_child(tmp_path)
    assert again.returncode == 0, f"exit code {again.returncode}: {again.stderr}"
    assert again.stdout.split() == ["True", "True"]
    assert "does not match the size and checksum" in again.stderr
    assert is_verified(lib) and lib.stat().st_size == size
    assert not list(lib.parent.glob(".build-*"))                        # no temp folder left


def test_a_build_that_crashes_its_test_run_is_not_used(monkeypatch, tmp_path):
    """A compiler that leaves a broken library: the test run in a child process dies (not this
    process), nothing is cached, and fitting falls back to torch ops."""
    cc = tmp_path / "broken-cc"
    cc.write_text(f"""#!/bin/sh
{shutil.which("cc") or shutil.which("gcc")} "$@" || exit 1
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
head -c 6000 "$out" > "$out.cut" && mv "$out.cut" "$out"
""")
    cc.chmod(0o755)
    monkeypatch.setattr(c_kernels, "_lib", None)
    monkeypatch.setattr(c_kernels, "_tried", False)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="fails its test"):
        assert not c_kernels.available()
    assert not list((tmp_path / "cache" / "weightspace" / "kernels").iterdir())
