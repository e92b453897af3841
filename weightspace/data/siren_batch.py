"""Forward and backward passes of many SIRENs on one image grid, with hand-written gradients.

This is the inner loop of :func:`weightspace.data.fit_inrs`. Every tensor carries the INRs along its
first axis and is laid out features-first (``[n, features, pixels]``), so each layer is one
``torch.bmm`` over the whole batch. Four things keep it fast on a CPU, where the sine and cosine
evaluations would otherwise cost about as much as the matrix products:

* **The first layer is separable.** Its pre-activation on pixel ``(r, c)`` is ``A[r] + B[c]`` with
  ``A = w0 * (W[:, 1] * y_r + b)`` and ``B = w0 * W[:, 0] * x_c``, so
  ``sin(A + B) = sin A cos B + cos A sin B`` is a rank-2 product of ``H + W`` sines and cosines rather
  than ``H * W`` of them; it is computed as one batched ``[H, 2] @ [2, W]`` product. Its gradient
  needs ``cos(A + B)``, which is never materialized: the sums over columns are taken against
  ``cos B`` and ``sin B`` and combined with ``cos A`` and ``sin A`` afterwards.
* **Biases ride in the matrix products.** Every hidden activation buffer carries a constant row of
  ones, so a layer's weight and bias are one ``[out, in + 1]`` matrix and its bias gradient comes out
  of the weight-gradient product for free.
* **No needless intermediates.** Buffers are allocated once per capacity and reused (fresh large
  allocations page-fault on every step); ``cos(z)`` overwrites ``z``; the output gradient of a
  one-channel INR is rank one, so it is folded into small per-neuron scale vectors instead of being
  broadcast into a ``[n, hidden, pixels]`` tensor; weight gradients are taken as ``h @ u^T`` (their
  transpose), which a CPU GEMM runs about 25% faster than ``u @ h^T`` with an inner size of 33.
* **Fused passes** (:mod:`.c_kernels`, float32 on a CPU): one pass gives ``sin(w0 z)`` and
  ``cos(w0 z)`` together, one writes the separable first layer's activations, one reduces its
  gradients. Without a C compiler the same steps run as torch ops.

FLOP accounting (``flops_per_step``) counts the dense-equivalent matrix work of a plain
forward + backward pass (the convention for "model FLOPs"), not the fewer FLOPs done here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from .c_kernels import separable_grad, separable_outer, sincos_


@dataclass(frozen=True)
class SirenLayout:
    """Where each SIREN parameter lives in a flat ``[n, numel]`` row.

    Layer 0 is stored as ``weight [h1, 2]`` then ``bias [h1]``; every later layer as one augmented
    matrix ``[out, in + 1]`` whose last column is the bias.
    """

    hidden: tuple[int, ...]
    out_features: int

    @cached_property
    def widths(self) -> tuple[int, ...]:
        return (2, *self.hidden, self.out_features)

    @cached_property
    def segments(self) -> list[tuple[int, int, tuple[int, ...]]]:
        """``(offset, numel, shape)`` per stored block: first-layer weight, first-layer bias, then one
        augmented matrix per later layer."""
        w = self.widths
        out, off = [], 0
        for shape in [(w[1], 2), (w[1],)] + [(w[i + 1], w[i] + 1) for i in range(1, len(w) - 1)]:
            n = math.prod(shape)
            out.append((off, n, shape))
            off += n
        return out

    @cached_property
    def numel(self) -> int:
        off, n, _ = self.segments[-1]
        return off + n

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``flat [n, numel]`` -> views ``[n, *shape]`` per block (they share memory with ``flat``)."""
        return [flat[:, off:off + n].view(flat.shape[0], *shape) for off, n, shape in self.segments]

    def state_tensors(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``flat [n, numel]`` -> SIREN state-dict tensors ``layers.{i}.weight [n, out, in]`` and
        ``layers.{i}.bias [n, out]`` (copies)."""
        v = self.views(flat)
        sd = {"layers.0.weight": v[0].clone(), "layers.0.bias": v[1].clone()}
        for i, aug in enumerate(v[2:], 1):
            sd[f"layers.{i}.weight"] = aug[:, :, :-1].clone()
            sd[f"layers.{i}.bias"] = aug[:, :, -1].clone()
        return sd

    def from_state_tensors(self, sd: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`state_tensors`: ``[n, numel]``."""
        n = sd["layers.0.weight"].shape[0]
        parts = [sd["layers.0.weight"].reshape(n, -1), sd["layers.0.bias"].reshape(n, -1)]
        for i in range(1, len(self.widths) - 1):
            parts.append(torch.cat([sd[f"layers.{i}.weight"], sd[f"layers.{i}.bias"].unsqueeze(-1)], -1).reshape(n, -1))
        return torch.cat(parts, 1)

    def flops_per_step(self, pixels: int) -> int:
        """Dense-equivalent FLOPs of one forward + backward pass of one INR over ``pixels`` points:
        ``2 * pixels * in * out`` per layer forward, twice that backward (weight and input gradients),
        except the input gradient of the first layer."""
        w = self.widths
        fwd = sum(w[i] * w[i + 1] for i in range(len(w) - 1))
        return 2 * pixels * (3 * fwd - w[0] * w[1])


class SirenBatch:
    """Loss and gradients of up to ``capacity`` SIRENs, each fit to its own image on one grid.

    ``grid``: image height ``H`` and width ``W``; coordinates are ``x = linspace(-1, 1, W)`` along
    columns (input 0) and ``y = linspace(-1, 1, H)`` along rows (input 1), as in DWSNets. The model is
    ``sin(w0 * (W1 p + b1)) -> sin(w0 * (W_k h + b_k)) ... -> W_L h + b_L + output_offset``, the
    :class:`weightspace.models.SIREN` forward.
    """

    def __init__(self, layout: SirenLayout, grid: tuple[int, int], capacity: int, w0: float,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.layout, self.w0 = layout, float(w0)
        self.H, self.W = grid
        self.P = self.H * self.W
        self.capacity = capacity
        kw = dict(dtype=dtype, device=device)
        self.x = torch.linspace(-1, 1, self.W, **kw)
        self.y = torch.linspace(-1, 1, self.H, **kw)
        hs, C, P, cap = layout.hidden, layout.out_features, self.P, capacity
        h1 = hs[0]
        # first layer: h1 = L @ R per (INR, neuron); the extra neuron h1 is the constant-one row
        self.Lf = torch.zeros(cap, h1 + 1, self.H, 2, **kw)
        self.Rf = torch.zeros(cap, h1 + 1, 2, self.W, **kw)
        self.Lf[:, h1, :, 0] = 1
        self.Rf[:, h1, 0, :] = 1
        # hidden activations with a trailing ones row; pre-activations (then their cosines)
        self.h = [torch.empty(cap, w + 1, P, **kw) for w in hs]
        for h in self.h:
            h[:, -1].fill_(1)
        self.z = [None] + [torch.empty(cap, w, P, **kw) for w in hs[1:]]
        self.y_out = torch.empty(cap, C, P, **kw)
        self.gh = [torch.empty(cap, w, P, **kw) for w in hs[:-1]]
        self.Q = torch.empty(cap, h1, 4, self.W, **kw)
        self.M = torch.empty(cap * h1, 4, self.H, **kw)
        # weight gradients are computed into contiguous buffers (bmm into strided views is slow)
        self.gm = [torch.empty(cap, b + 1, a, **kw) for a, b in zip(layout.widths[2:], layout.widths[1:-1])]
        self.S = torch.empty(cap, h1, 3, **kw)
        self._view_cache: dict[tuple, list[torch.Tensor]] = {}
        self._buffer_cache: dict[int, dict[str, list[torch.Tensor]]] = {}

    # ------------------------------------------------------------------------------------------
    # The fitting loop passes the same buffers every step, and slicing them costs more than a small
    # batch's arithmetic, so the views are cached. A cached view keeps its storage alive, so an equal
    # ``(data_ptr, shape, strides)`` key always means the same memory.
    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``layout.views(flat)`` plus, at the end, the weight part ``[n, out, in]`` of every augmented
        matrix and the first layer's ``(W[:, 0:1], W[:, 1:2], b[..., None])``."""
        key = (flat.data_ptr(), tuple(flat.shape), flat.stride(), flat.dtype)
        views = self._view_cache.get(key)
        if views is None:
            if len(self._view_cache) >= 16:
                self._view_cache.clear()
            v = self.layout.views(flat)
            views = v + [m[:, :, :-1] for m in v[2:]] + [v[0][:, :, 0:1], v[0][:, :, 1:2], v[1].unsqueeze(-1)]
            self._view_cache[key] = views
        return views

    def _buffers(self, n: int) -> dict[str, list[torch.Tensor]]:
        """The first ``n`` rows of every work buffer (cached per ``n``)."""
        bufs = self._buffer_cache.get(n)
        if bufs is None:
            bufs = self._buffer_cache[n] = {
                "h": [h[:n] for h in self.h], "act": [h[:n, :-1] for h in self.h],
                "z": [None if z is None else z[:n] for z in self.z], "y": [self.y_out[:n]],
                "gm": [g[:n] for g in self.gm], "gh": [g[:n] for g in self.gh], "S": [self.S[:n]]}
        return bufs

    def _separable_grad_torch(self, G, sA, cA, sB, cB, S) -> None:
        """Torch version of :func:`~weightspace.data.c_kernels.separable_grad`: sums over columns
        against ``cos B`` and ``sin B`` (times ``x_c`` or 1) as one batched product, ``M [n, h1, 4, H]``."""
        n, h1, H = sA.shape
        W = self.W
        Q = self.Q[:n]                                                   # [n, h1, 4, W]
        torch.mul(cB, self.x, out=Q[:, :, 0])
        Q[:, :, 1] = cB
        torch.mul(sB, self.x, out=Q[:, :, 2])
        Q[:, :, 3] = sB
        M = self.M[:n * h1]
        torch.bmm(Q.view(n * h1, 4, W), G.reshape(n * h1, H, W).transpose(1, 2), out=M)
        M = M.view(n, h1, 4, H)
        Sx = cA * M[:, :, 0] - sA * M[:, :, 2]                           # [n, h1, H]: sum_c g_z1 * x_c
        S1 = cA * M[:, :, 1] - sA * M[:, :, 3]                           #             sum_c g_z1
        torch.sum(Sx, -1, out=S[:, :, 0])
        torch.matmul(S1, self.y, out=S[:, :, 1])
        torch.sum(S1, -1, out=S[:, :, 2])
        S.mul_(self.w0)

    def loss_and_grad(self, flat: torch.Tensor, target: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """Per-INR MSE ``[n]`` of ``flat [n, numel]`` against ``target [n, C, P]`` (which already has the
        output offset subtracted); if ``grad [n, numel]`` is given, fills it with d(MSE)/d(flat)."""
        n = flat.shape[0]
        lay, w0, H, W, P = self.layout, self.w0, self.H, self.W, self.P
        hs, C = lay.hidden, lay.out_features
        h1 = hs[0]
        L = len(hs) + 1                                                  # layers
        views = self._views(flat)
        _, _, mats, weights = views[0], views[1], views[2:L + 1], views[L + 1:2 * L]
        W1x, W1y, b1c = views[2 * L:]
        bufs = self._buffers(n)
        hbuf, act, zs = bufs["h"], bufs["act"], bufs["z"]
        # ---- first layer, separable: A [n, h1, H] (rows, with the bias), B [n, h1, W] (columns)
        A = torch.addcmul(b1c, W1y, self.y)
        B = W1x * self.x
        sA, cA = _sin_cos(A, w0)
        sB, cB = _sin_cos(B, w0)
        if not separable_outer(sA, cA, sB, cB, act[0]):
            Lf, Rf = self.Lf[:n], self.Rf[:n]
            Lf[:, :h1, :, 0] = sA
            Lf[:, :h1, :, 1] = cA
            Rf[:, :h1, 0, :] = cB
            Rf[:, :h1, 1, :] = sB
            torch.bmm(Lf.view(-1, H, 2), Rf.view(-1, 2, W), out=hbuf[0].view(-1, H, W))
        # ---- hidden layers k >= 2: z = w0 * [W | b] @ [h; 1]; h = sin z; cos z replaces z in its buffer
        for k in range(1, len(hs)):
            z = zs[k]
            torch.bmm(mats[k - 1], hbuf[k - 1], out=z)
            if not sincos_(z, act[k], w0):
                z.mul_(w0)
                torch.sin(z, out=act[k])
                if grad is not None:
                    torch.cos(z, out=z)
        y = bufs["y"][0]
        torch.bmm(mats[-1], hbuf[-1], out=y)
        err = y.sub_(target)                                             # [n, C, P]
        mse = err.square().sum((1, 2)).div_(C * P)
        if grad is None:
            return mse
        alpha = 2.0 / (C * P)                                            # d(mse)/d(y) = alpha * err
        gviews = self._views(grad)
        gW1, gb1, gmats = gviews[0], gviews[1], gviews[2:L + 1]
        # ---- output layer: d(mse)/d(y) = alpha * err
        # weight gradients come out transposed ([in + 1, out]): that product runs ~25% faster on a CPU
        gT = torch.bmm(hbuf[-1], err.transpose(1, 2), out=bufs["gm"][-1])
        torch.mul(gT.transpose(1, 2), alpha, out=gmats[-1])
        Wout = weights[-1]                                               # [n, C, hL]
        # the gradient reaching h_L is diag(s) @ err (rank one, one channel) or an explicit G
        if C == 1:
            s, G = Wout[:, 0, :] * alpha, None                           # s [n, hL]
        else:
            s, G = None, torch.bmm(Wout.transpose(1, 2), err).mul_(alpha)  # G [n, hL, P]
        for i in range(len(hs) - 1, 0, -1):
            # hidden layer i: z_i = w0 * [W_i | b_i] @ [h_{i-1}; 1], h_i = sin z_i
            u = zs[i].mul_(err if G is None else G)                      # dL/dz_i = diag(s) u
            gT = torch.bmm(hbuf[i - 1], u.transpose(1, 2), out=bufs["gm"][i - 1])
            scale = w0 if s is None else s.unsqueeze(-1) * w0
            torch.mul(gT.transpose(1, 2), scale, out=gmats[i - 1])
            WiT = (weights[i - 1] * scale).transpose(1, 2).contiguous()  # [n, h_{i-1}, h_i]
            G = torch.bmm(WiT, u, out=bufs["gh"][i - 1])                 # dL/dh_{i-1}
            s = None
        # ---- first layer: G = dL/dh_1 [n, h1, P]
        if G is None:
            G = err * s.unsqueeze(-1)
        S = bufs["S"][0]                                                 # [n, h1, 3]: x, y, bias
        if not separable_grad(G, sA, cA, sB, cB, self.x, self.y, w0, S):
            self._separable_grad_torch(G, sA, cA, sB, cB, S)
        gW1.copy_(S[:, :, :2])
        gb1.copy_(S[:, :, 2])
        return mse


def _sin_cos(x: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin(scale x), cos(scale x))`` of a small contiguous tensor; ``x`` is consumed."""
    s = torch.empty_like(x)
    if sincos_(x, s, scale):
        return s, x
    x.mul_(scale)
    return torch.sin(x, out=s), x.cos_()
