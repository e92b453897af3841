"""INR editing: learn a weight-space edit of SIRENs (the dilation task of DWSNets and NFN).

The model is an equivariant head (``out_features=None``) returning a weight *delta*; the edited INR is
``w + delta * delta_scale`` and :attr:`Task.predict` renders it on the pixel grid with a batched,
differentiable SIREN forward (:func:`render_siren`; :func:`weightspace.data.render_inrs` runs under
``no_grad`` and cannot carry a gradient). The loss is each network's mean squared error against its
target image; the metric is ``mse`` over a split (lower is better, early stopping watches it).

Decisions:

* targets are images ``[N, C, H, W]`` (or ``[N, H, W]``), one per network, passed to the trainer as a
  targets file (``TrainConfig(targets=...)``); :func:`dilation_targets` makes them: a 3x3 max-pool
  with stride 1 and padding 1 (grey-scale dilation by a 3x3 square, as in DWSNets / NFN, which use
  OpenCV's ``dilate`` with that kernel; border pixels see only the pixels inside the image).
* ``delta_scale`` (a number, or one per tensor name) maps the model's output to weight units. The
  models normalize their inputs per tensor, so their outputs are in "normalized" units too;
  :func:`delta_scales` gives ``factor * std`` of each tensor over the training networks, so a unit
  output moves a tensor by ``factor`` of its spread (SIREN weights are multiplied by ``w0 = 30``, so
  an unscaled edit of size one would destroy the INR before training starts).
* a flat baseline works unchanged: ``FlatMLP(out_features=None)`` returns a WeightSpace.
* the task is a record, not a name of ``TASKS``: pass it to ``train(config, out, task=...)`` and
  ``evaluate(run, task=...)`` (``examples/inr_editing.py`` shows the whole path).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from ..space import WeightSpace
from .tasks import Task

__all__ = ["dilation_targets", "render_siren", "delta_scales", "editing_task"]


def dilation_targets(images: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Grey-scale morphological dilation of every image by a ``kernel_size`` square (odd): each pixel
    becomes the maximum over its neighbourhood (max-pool, stride 1, padding ``kernel_size // 2``).
    ``images``: ``[N, H, W]`` or ``[N, C, H, W]``; returns the same shape and dtype."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if images.dim() not in (3, 4):
        raise ValueError(f"images must be [N, H, W] or [N, C, H, W], got shape {tuple(images.shape)}")
    x = images.unsqueeze(1) if images.dim() == 3 else images
    out = F.max_pool2d(x.float(), kernel_size, stride=1, padding=kernel_size // 2).to(images.dtype)
    return out.squeeze(1) if images.dim() == 3 else out


def render_siren(weights: WeightSpace | Mapping[str, torch.Tensor], grid: tuple[int, int], w0: float = 30.0,
                 output_offset: float = 0.5) -> torch.Tensor:
    """SIRENs (``layers.{i}.weight/bias``, ``[N, ...]``) evaluated on the ``(H, W)`` pixel grid:
    ``[N, C, H, W]``, differentiable in the weights and in their dtype. The same forward as
    :func:`weightspace.data.render_inrs` (``sin(w0 * (W h + b))`` between layers, ``+ output_offset``
    at the end)."""
    from ..data import coordinate_grid

    tensors = weights.tensors if isinstance(weights, WeightSpace) else weights
    n_layers = sum(1 for k in tensors if k.startswith("layers.") and k.endswith(".weight"))
    first = tensors["layers.0.weight"]
    H, W = grid
    h = coordinate_grid(H, W, dtype=first.dtype).to(first.device).expand(first.shape[0], -1, -1)
    for k in range(n_layers):
        Wk, bk = tensors[f"layers.{k}.weight"], tensors[f"layers.{k}.bias"]
        h = torch.baddbmm(bk.unsqueeze(1), h, Wk.transpose(1, 2))
        if k < n_layers - 1:
            h = torch.sin(w0 * h)
    return (h + output_offset).transpose(1, 2).reshape(h.shape[0], -1, H, W)


def delta_scales(weights: WeightSpace, factor: float = 0.1) -> dict[str, float]:
    """``factor`` times each learned-on tensor's standard deviation over ``weights`` (the training
    networks): the ``delta_scale`` of :func:`editing_task`."""
    return {n: factor * float(weights.tensors[n].double().std()) for n in weights.spec.weight_names}


def _apply_delta(w: WeightSpace, delta: WeightSpace, scale) -> WeightSpace:
    if isinstance(scale, Mapping):
        d = {n: (t * float(scale[n]) if n in scale else t) for n, t in delta.tensors.items()}
        delta = WeightSpace(delta.spec, d)
    else:
        delta = delta * float(scale)
    return w.to(delta.dtype) + delta


def _per_network_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((pred - y.to(pred).reshape(pred.shape)) ** 2).reshape(pred.shape[0], -1).mean(1)


def _editing_metrics(preds: torch.Tensor, ys: torch.Tensor) -> dict[str, float]:
    return {"mse": float(_per_network_mse(preds.double(), ys.double()).mean())}


def editing_task(grid: tuple[int, int], w0: float = 30.0, output_offset: float = 0.5,
                 delta_scale: float | Mapping[str, float] = 1.0, *, name: str = "inr-editing",
                 target: str = "edited") -> Task:
    """A :class:`Task` whose model (an equivariant head, ``out_features=None``) outputs a weight delta;
    ``predict`` renders ``w + delta * delta_scale`` on ``grid`` (``[B, C, H, W]``), ``loss`` is each
    network's MSE against its target image, the metric ``mse`` (lower is better). ``grid``, ``w0`` and
    ``output_offset``: the zoo's recipe (``zoo.manifest["recipe"]``). ``target``: the zoo record of the
    target images, when there is no targets file."""
    grid = (int(grid[0]), int(grid[1]))
    if isinstance(delta_scale, Mapping):
        delta_scale = {str(k): float(v) for k, v in delta_scale.items()}

    def predict(delta: WeightSpace, w: WeightSpace) -> torch.Tensor:
        return render_siren(_apply_delta(w, delta, delta_scale), grid, w0, output_offset)

    return Task(name, target, _per_network_mse, _editing_metrics, "mse", higher_is_better=False,
                out_features=None, predict=predict, mixable=False)
