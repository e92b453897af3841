"""Small C kernels for the SIREN fitting loop, compiled on first use; torch ops otherwise.

On a CPU the matrix products of :class:`~weightspace.data.siren_batch.SirenBatch` run near the
matmul peak; what held the loop back were the passes around them. These kernels fold those passes:

* :func:`sincos_` — a hidden layer needs ``sin(w0 z)`` forward and ``cos(w0 z)`` backward. In torch
  that is three passes over ``[n, width, pixels]`` (scale, sine, cosine), each a 1-ULP evaluation with
  its own range reduction. Here it is one pass: one Cody-Waite reduction by ``pi/2`` (three-part
  constant, accurate well past ``|w0 z| = 1e5``) shared by a degree-9 sine and a degree-8 cosine Taylor
  polynomial on ``[-pi/4, pi/4]`` (truncation error under ``2e-9``). Absolute error against float64:
  under ``1e-7`` (``torch.sin``: ``4e-8``); about 3.5x faster than ``mul + sin + cos`` on one core.
* :func:`separable_outer` — the separable first layer's activations
  ``sin A[r] cos B[c] + cos A[r] sin B[c]`` for every pixel, one fused multiply-add per value (torch
  needs thousands of tiny ``[H, 2] @ [2, W]`` products or two broadcast passes).
* :func:`separable_grad` — the first layer's weight and bias gradients straight from ``dL/dh1``: per
  neuron, one pass over its ``[H, W]`` gradient accumulating four column vectors weighted by
  ``cos A``, ``sin A`` (times ``y``), then three dot products against ``cos B``, ``sin B`` (times
  ``x``); no ``[n, h1, 4, H]`` intermediate.

The source below is compiled with the system C compiler (``$CC``, else ``cc`` / ``gcc`` / ``clang``)
into ``$XDG_CACHE_HOME/weightspace/kernels`` (default ``~/.cache``), keyed by the source, flags and
CPU, and loaded with :mod:`ctypes`: nothing to build at install time, no torch headers, well under a
second to compile. A cached library is loaded only if it matches the size and checksum recorded when
it was built and test-run in a child process (:mod:`.kernel_cache`); a damaged one is rebuilt.
Without a working compiler, with ``WEIGHTSPACE_C_KERNELS=0`` in the environment or after
``set_enabled(False)``, :func:`available` is False and every wrapper returns False so that the
caller runs its torch version (same results up to float rounding). Only float32 CPU tensors are
handled; float64 always takes the torch path.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

from .kernel_cache import cache_dir, cpu_id, verified_library

_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* zc[i] <- cos(scale * zc[i]);  s[i] <- sin(scale * zc[i]) */
static void sincos_row(float *__restrict zc, float *__restrict s, int64_t n, float scale) {
    const float two_over_pi = 0.636619772367581343f;
    const float p1 = 1.5703125f, p2 = 4.83751296997070312e-4f, p3 = 7.54978995489188216e-8f;
    for (int64_t i = 0; i < n; i++) {
        float x = scale * zc[i];
        float k = rintf(x * two_over_pi);
        int32_t q = (int32_t)k;
        float r = ((x - k * p1) - k * p2) - k * p3;
        float r2 = r * r;
        float sp = r + r * r2 * (-1.66666667e-1f
                                 + r2 * (8.33333333e-3f + r2 * (-1.98412698e-4f + r2 * 2.75573192e-6f)));
        float cp = 1.0f + r2 * (-0.5f + r2 * (4.16666667e-2f + r2 * (-1.38888889e-3f + r2 * 2.48015873e-5f)));
        float sv = (q & 1) ? cp : sp;
        float cv = (q & 1) ? sp : cp;
        s[i] = (q & 2) ? -sv : sv;
        zc[i] = ((q + 1) & 2) ? -cv : cv;
    }
}

/* rows of `cols` floats; row b of zc starts at zc + b * zc_stride, row b of s at s + b * s_stride */
void ws_sincos(float *zc, int64_t zc_stride, float *s, int64_t s_stride, int64_t rows, int64_t cols,
               float scale) {
    for (int64_t b = 0; b < rows; b++)
        sincos_row(zc + b * zc_stride, s + b * s_stride, cols, scale);
}

/* for m in [0, rows): out_m[r, c] = sa_m[r] cb_m[c] + ca_m[r] sb_m[c]; sa, ca: [rows, H]; sb, cb:
   [rows, W]; the H * W block of m starts at out + (m / per_net) * net_stride + (m % per_net) * H * W */
void ws_separable_outer(const float *sa, const float *ca, const float *sb, const float *cb, float *out,
                        int64_t rows, int64_t per_net, int64_t net_stride, int64_t H, int64_t W) {
    for (int64_t m = 0; m < rows; m++) {
        const float *sam = sa + m * H, *cam = ca + m * H, *sbm = sb + m * W, *cbm = cb + m * W;
        float *o = out + (m / per_net) * net_stride + (m % per_net) * H * W;
        for (int64_t r = 0; r < H; r++) {
            const float s = sam[r], c = cam[r];
            float *__restrict orow = o + r * W;
            for (int64_t j = 0; j < W; j++)
                orow[j] = s * cbm[j] + c * sbm[j];
        }
    }
}

/* for m in [0, rows): with g = G_m [H, W] (dL/dh1 of one neuron) and cos z1[r, c] =
   ca[r] cb[c] - sa[r] sb[c], writes out[m] = scale * (sum g cos(z1) x_c, sum g cos(z1) y_r, sum g cos(z1)).
   Accumulates over rows first, per column (vectorized, no horizontal sums), then reduces the columns. */
void ws_separable_grad(const float *G, int64_t g_stride, const float *sa, const float *ca, const float *sb,
                       const float *cb, const float *x, const float *y, float *out, int64_t rows, int64_t H,
                       int64_t W, float scale) {
    float acc[4 * W];
    float *__restrict vc = acc, *__restrict vs = acc + W, *__restrict vcy = acc + 2 * W, *__restrict vsy = acc + 3 * W;
    for (int64_t m = 0; m < rows; m++) {
        const float *g = G + m * g_stride, *sam = sa + m * H, *cam = ca + m * H, *sbm = sb + m * W,
                    *cbm = cb + m * W;
        for (int64_t j = 0; j < 4 * W; j++)
            acc[j] = 0.0f;
        for (int64_t r = 0; r < H; r++) {
            const float *__restrict grow = g + r * W;
            const float c = cam[r], s = sam[r], cy = c * y[r], sy = s * y[r];
            for (int64_t j = 0; j < W; j++) {
                vc[j] += c * grow[j];
                vs[j] += s * grow[j];
                vcy[j] += cy * grow[j];
                vsy[j] += sy * grow[j];
            }
        }
        float gx = 0.0f, gy = 0.0f, gb = 0.0f;
        for (int64_t j = 0; j < W; j++) {
            float d = cbm[j] * vc[j] - sbm[j] * vs[j];
            gx += d * x[j];
            gb += d;
            gy += cbm[j] * vcy[j] - sbm[j] * vsy[j];
        }
        out[3 * m] = scale * gx;
        out[3 * m + 1] = scale * gy;
        out[3 * m + 2] = scale * gb;
    }
}
"""
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]
_MAX_STACK_COLUMNS = 16384                 # ws_separable_grad keeps 4 * W floats on the stack
_I64, _F32, _PTR = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
_SIGNATURES = {
    "ws_sincos": [_PTR, _I64, _PTR, _I64, _I64, _I64, _F32],
    "ws_separable_outer": [_PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64],
    "ws_separable_grad": [_PTR, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _F32],
}

# run in a child process on a fresh build (weightspace.data.kernel_cache): load it, compute a few sines
_PROBE = """
import ctypes, math, sys
lib = ctypes.CDLL(sys.argv[1])
n = 5
z, s = (ctypes.c_float * n)(*[0.1 * i - 0.2 for i in range(n)]), (ctypes.c_float * n)()
lib.ws_sincos.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                          ctypes.c_int64, ctypes.c_float]
lib.ws_sincos(z, n, s, n, 1, n, ctypes.c_float(30.0))
err = max(abs(s[i] - math.sin(30 * (0.1 * i - 0.2))) + abs(z[i] - math.cos(30 * (0.1 * i - 0.2))) for i in range(n))
sys.exit(0 if err < 1e-5 else f"sincos is off by {err}")
"""

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_enabled = os.environ.get("WEIGHTSPACE_C_KERNELS", "1").lower() not in ("0", "false", "no", "off")
_pool: ThreadPoolExecutor | None = None


def _build() -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    key = hashlib.sha256("\0".join([_SOURCE, *_FLAGS, cc, platform.machine(), cpu_id()]).encode()).hexdigest()[:16]
    path = verified_library(cache_dir() / f"siren-{key}.so", _SOURCE,
                            lambda src, out: [cc, *_FLAGS, "-o", str(out), str(src)], _PROBE)
    if path is None:
        return None
    lib = ctypes.CDLL(str(path))
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    return lib


def available() -> bool:
    """Whether the compiled kernels are in use (compiles them on the first call)."""
    global _lib, _tried
    if _lib is not None or not _enabled:
        return _enabled and _lib is not None
    with _lock:
        if not _tried:
            _tried = True
            try:
                _lib = _build()
            except (OSError, subprocess.SubprocessError) as err:
                warnings.warn(f"weightspace: SIREN C kernels unavailable ({err}); fitting uses torch ops", stacklevel=2)
                _lib = None
    return _lib is not None


def set_enabled(flag: bool) -> bool:
    """Switch the kernels on or off for this process (``WEIGHTSPACE_C_KERNELS=0`` starts them off);
    returns the previous setting. Off, every wrapper returns False and callers use torch ops."""
    global _enabled
    before, _enabled = _enabled, bool(flag)
    return before


def _f32(*tensors: torch.Tensor) -> bool:
    return all(t.dtype is torch.float32 and t.is_cpu for t in tensors)


def _blocks(t: torch.Tensor) -> tuple[int, int, int] | None:
    """``(blocks, block_numel, block_stride)`` if every ``t[b]`` is one contiguous block."""
    shape, stride = t.shape, t.stride()
    if len(shape) < 2:
        return None
    numel = 1
    for d in range(len(shape) - 1, 0, -1):
        if shape[d] != 1 and stride[d] != numel:
            return None
        numel *= shape[d]
    return shape[0], numel, stride[0]


def _split(rows: int) -> list[tuple[int, int]]:
    """Row ranges, one per torch thread (ctypes releases the GIL, so they run in parallel)."""
    threads = max(1, min(torch.get_num_threads(), rows))
    bounds = [rows * i // threads for i in range(threads + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _run(calls: list[tuple]) -> None:
    global _pool
    if len(calls) == 1:
        calls[0][0](*calls[0][1:])
        return
    if _pool is None or _pool._max_workers < len(calls):
        _pool = ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="weightspace-kernels")
    for job in [_pool.submit(*c) for c in calls]:
        job.result()


def sincos_(z: torch.Tensor, sin_out: torch.Tensor, scale: float) -> bool:
    """In place: ``sin_out <- sin(scale * z)``, then ``z <- cos(scale * z)``. ``z``, ``sin_out``: float32
    CPU tensors ``[n, ...]`` of one shape whose sub-tensors ``z[b]`` / ``sin_out[b]`` are each contiguous
    (e.g. ``h[:, :-1]`` of a ``[n, w + 1, P]`` buffer). Returns False, touching nothing, when the
    kernel is unavailable or the layout does not fit."""
    if z.shape != sin_out.shape or z.numel() == 0 or not _f32(z, sin_out) or not available():
        return False
    lz, ls = _blocks(z), _blocks(sin_out)
    if lz is None or ls is None:
        return False
    rows, cols, zs = lz
    ss, item = ls[2], z.element_size()
    _run([(_lib.ws_sincos, z.data_ptr() + a * zs * item, zs, sin_out.data_ptr() + a * ss * item, ss, b - a, cols,
           float(scale)) for a, b in _split(rows)])
    return True


def separable_outer(sA: torch.Tensor, cA: torch.Tensor, sB: torch.Tensor, cB: torch.Tensor,
                    out: torch.Tensor) -> bool:
    """``out[b, j, r * W + c] = sA[b, j, r] cB[b, j, c] + cA[b, j, r] sB[b, j, c]``.

    ``sA, cA [n, h, H]`` and ``sB, cB [n, h, W]`` contiguous; ``out [n, h, H * W]`` with each
    ``out[b]`` contiguous (e.g. ``h1[:, :-1]`` of a ``[n, h + 1, H * W]`` buffer). False when it cannot run."""
    if not _f32(sA, cA, sB, cB, out) or not available():
        return False
    n, h, H = sA.shape
    W = sB.shape[-1]
    if not all(t.is_contiguous() for t in (sA, cA, sB, cB)) or cA.shape != sA.shape or sB.shape != cB.shape \
            or sB.shape[:2] != (n, h) or out.shape != (n, h, H * W) or _blocks(out) is None:
        return False
    ns, item = out.stride(0), 4
    calls = []
    for a, b in _split(n):                                # whole networks per thread
        calls.append((_lib.ws_separable_outer, sA.data_ptr() + a * h * H * item, cA.data_ptr() + a * h * H * item,
                      sB.data_ptr() + a * h * W * item, cB.data_ptr() + a * h * W * item,
                      out.data_ptr() + a * ns * item, (b - a) * h, h, ns, H, W))
    _run(calls)
    return True


def separable_grad(G: torch.Tensor, sA: torch.Tensor, cA: torch.Tensor, sB: torch.Tensor, cB: torch.Tensor,
                   x: torch.Tensor, y: torch.Tensor, scale: float, out: torch.Tensor) -> bool:
    """``out [n, h, 3] = scale * (sum_rc g cos z1 x_c, sum_rc g cos z1 y_r, sum_rc g cos z1)`` with
    ``g = G[b, j] [H * W]`` and ``cos z1[r, c] = cA[r] cB[c] - sA[r] sB[c]``.

    ``G [n, h, H * W]`` with each ``G[b, j]`` contiguous and one stride between neurons; ``sA, cA
    [n, h, H]``, ``sB, cB [n, h, W]``, ``x [W]``, ``y [H]``, ``out`` contiguous. False when it cannot run."""
    if not _f32(G, sA, cA, sB, cB, x, y, out) or not available():
        return False
    n, h, H = sA.shape
    W = sB.shape[-1]
    if not all(t.is_contiguous() for t in (sA, cA, sB, cB, x, y, out)) or G.shape != (n, h, H * W) \
            or G.stride(2) != 1 or G.stride(0) != h * G.stride(1) or out.shape != (n, h, 3) or W > _MAX_STACK_COLUMNS:
        return False
    gs, item = G.stride(1), 4
    _run([(_lib.ws_separable_grad, G.data_ptr() + a * h * gs * item, gs, sA.data_ptr() + a * h * H * item,
           cA.data_ptr() + a * h * H * item, sB.data_ptr() + a * h * W * item, cB.data_ptr() + a * h * W * item,
           x.data_ptr(), y.data_ptr(), out.data_ptr() + a * h * 3 * item, (b - a) * h, H, W, float(scale))
          for a, b in _split(n)])
    return True
