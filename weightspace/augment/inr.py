"""INR geometry: rotate, translate and scale the image an INR represents, exactly, in its weights.

An INR ``f(p)`` whose first layer reads coordinates ``p = (x, y)`` only through ``W1 p + b1``
represents the transformed image ``f'(p) = f(M p + c)`` when ``W1 <- W1 M`` and ``b1 <- b1 + W1 c``:
the rest of the network is untouched, so the transform is exact for any such network (SIREN or
not), on every grid, and costs one ``[B, out, 2] @ [B, 2, 2]`` product.

Conventions (those of :func:`weightspace.data.inr.render_inrs` and the INR recipes): input 0 is
``x``, along columns; input 1 is ``y``, along rows, downwards (row 0 is drawn at the top); both span
``[-1, 1]`` over the image, so one pixel is ``2 / (W - 1)``. Therefore

* ``rotate_inr(w, theta)`` turns the image counterclockwise as displayed by ``theta`` degrees about
  its centre, as ``torch.rot90(img, k=1, dims=(-2, -1))`` does for 90 and torchvision's ``rotate``;
  ``f'(x, y) = f(x cos - y sin, x sin + y cos)``. Angles that are multiples of 90 degrees use exact
  cosines and sines (0, +-1), so on a square grid they reproduce ``rot90`` exactly;
* ``translate_inr(w, (tx, ty))`` moves the content by ``tx`` to the right and ``ty`` down, in
  coordinate units: ``f'(p) = f(p - t)``;
* ``scale_inr(w, s)`` magnifies the content by ``s`` about the centre: ``f'(p) = f(p / s)``.

Design decisions: the first layer is found from the spec's dataflow (the one linear op reading the
network's only input site, which has 2 features) or named with ``first_layer=`` (a weight of shape
``[out, 2]``; its bias is the entry with ``bias`` in place of ``weight``). A spec whose first layer
does not read 2-D coordinates raises a :class:`SpecError` naming the parameter. The products are
computed in float64 and rounded once. Apply these to raw INR weights, before any normalization
(normalizing with per-tensor means does not commute with a change of coordinates).
"""
from __future__ import annotations

from typing import Any

import torch

from ..space import WeightSpace
from ..spec.errors import SpecError
from ..spec.spec import WeightSpaceSpec
from .base import Transform, as_range, check_weightspace, draw_device, log_uniform, replace, uniform

__all__ = ["INRRotate", "INRTranslate", "INRScale", "inr_first_layer", "inr_affine", "rotate_inr",
           "translate_inr", "scale_inr"]


# ------------------------------------------------------------------------------------ first layer


def _named_first_layer(spec: WeightSpaceSpec, name: str, who: str) -> tuple[str, str | None]:
    if name not in spec:
        raise SpecError(f"{who}: first_layer '{name}' is not an entry of the spec")
    shape = spec[name].shape
    if len(shape) != 2 or shape[1] != 2:
        raise SpecError(f"{who}: first_layer '{name}' has shape {tuple(shape)}; a layer reading 2-D (x, y) "
                        f"coordinates has a weight of shape [out, 2]")
    bias = name[: -len("weight")] + "bias" if name.endswith("weight") else None
    if bias is not None and (bias not in spec or spec[bias].shape != (shape[0],)):
        bias = None
    return name, bias


def inr_first_layer(spec: WeightSpaceSpec, first_layer: str | None = None,
                    who: str = "INR transform") -> tuple[str, str | None]:
    """``(weight name, bias name or None)`` of the layer that reads the INR's ``(x, y)`` coordinates.

    Found in the dataflow: the network's one input site must have 2 features and be read by one
    linear op only (a plain ``[out, 2]`` matrix, no convolution or embedding); otherwise a
    :class:`SpecError` names what reads the input instead. ``first_layer`` names the weight instead."""
    if first_layer is not None:
        return _named_first_layer(spec, first_layer, who)
    df = spec.dataflow
    if df is None or not df.sites:
        raise SpecError(f"{who}: the spec has no dataflow to find the layer reading (x, y) in; name it with "
                        f"first_layer='...weight'")
    inputs = [s for s in df.sites if s.kind == "input"]
    readers = [op for op in df.ops if any(v.site in {s.id for s in inputs} for v in op.inputs)]
    need = "needs a first layer that reads 2-D (x, y) coordinates through one [out, 2] weight"
    if len(inputs) != 1:
        raise SpecError(f"{who} {need}; the spec has {len(inputs)} input sites "
                        f"({', '.join(s.name for s in inputs) or 'none'})")
    site = inputs[0]
    weights = [op.param("weight").name if op.param("weight") else op.name for op in readers]
    if len(readers) != 1:
        raise SpecError(f"{who} {need}; the input '{site.name}' is read by {len(readers)} ops "
                        f"({', '.join(weights)})")
    op = readers[0]
    wuse = op.param("weight")
    if op.kind != "linear" or wuse is None or wuse.dims != ("out", "in") or op.attr("embedding"):
        what = "" if wuse is None else f" (parameter '{wuse.name}' of shape {tuple(spec[wuse.name].shape)})"
        raise SpecError(f"{who} {need}; the input '{site.name}' is read by the {op.kind} op '{op.name}'{what}")
    shape = tuple(spec[wuse.name].shape)
    if site.size != 2 or len(shape) != 2 or shape[1] != 2:
        raise SpecError(f"{who} {need}; the first layer's weight '{wuse.name}' has shape {shape} "
                        f"(it reads {site.size} input features, not 2)")
    buse = op.param("bias")
    return wuse.name, None if buse is None else buse.name


# ------------------------------------------------------------------------------------ functional


def _per_network(value: Any, batch: int, tail: tuple[int, ...], what: str) -> torch.Tensor:
    v = torch.as_tensor(value, dtype=torch.float64)
    if v.shape == tail:
        return v.expand(batch, *tail)
    if v.shape == (batch, *tail):
        return v
    raise SpecError(f"{what} must have shape {list(tail)} (one for all networks) or {[batch, *tail]}, "
                    f"got {list(v.shape)}")


def inr_affine(w: WeightSpace, matrix: Any, offset: Any = None, first_layer: str | None = None) -> WeightSpace:
    """The INRs of ``w`` composed with ``p -> M p + c``: ``f'(p) = f(matrix @ p + offset)``.

    ``matrix``: ``[2, 2]`` or ``[B, 2, 2]``; ``offset``: ``[2]`` or ``[B, 2]`` (None: zero; a nonzero
    offset needs a first-layer bias)."""
    check_weightspace(w, "inr_affine")
    wname, bname = inr_first_layer(w.spec, first_layer, "inr_affine")
    W = w.tensors[wname]
    B = w.batch_size
    M = _per_network(matrix, B, (2, 2), "matrix").to(W.device)
    W64 = W.to(torch.float64)
    new = {wname: torch.matmul(W64, M).to(W.dtype)}
    if offset is not None:
        c = _per_network(offset, B, (2,), "offset").to(W.device)
        if bool((c != 0).any()):
            if bname is None:
                raise SpecError(f"inr_affine: a translation needs a bias on the first layer '{wname}', which has none")
            b = w.tensors[bname]
            new[bname] = (b.to(torch.float64) + torch.matmul(W64, c.unsqueeze(-1)).squeeze(-1)).to(b.dtype)
    return replace(w, new)


def _cos_sin(degrees: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of angles in degrees, exact (0, +-1) at multiples of 90 degrees."""
    rad = torch.deg2rad(degrees)
    c, s = torch.cos(rad), torch.sin(rad)
    quarter = torch.remainder(degrees, 90.0) == 0
    k = torch.remainder(torch.div(degrees, 90.0, rounding_mode="floor"), 4).long()
    exact_c = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64, device=degrees.device)[k]
    exact_s = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64, device=degrees.device)[k]
    return torch.where(quarter, exact_c, c), torch.where(quarter, exact_s, s)


def rotate_inr(w: WeightSpace, degrees: Any, first_layer: str | None = None) -> WeightSpace:
    """Rotate the images counterclockwise (as displayed) by ``degrees`` (a number or ``[B]``)."""
    d = _per_network(degrees, w.batch_size, (), "degrees")
    c, s = _cos_sin(d)
    M = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)      # [B, 2, 2]
    return inr_affine(w, M, None, first_layer)


def translate_inr(w: WeightSpace, shift: Any, first_layer: str | None = None) -> WeightSpace:
    """Move the images' content by ``shift = (tx, ty)`` (``[2]`` or ``[B, 2]``, coordinate units:
    ``tx > 0`` right, ``ty > 0`` down; one pixel is ``2 / (size - 1)``)."""
    t = _per_network(shift, w.batch_size, (2,), "shift")
    return inr_affine(w, torch.eye(2, dtype=torch.float64), -t, first_layer)


def scale_inr(w: WeightSpace, factor: Any, first_layer: str | None = None) -> WeightSpace:
    """Magnify the images' content by ``factor`` (a number or ``[B]``, > 0) about the centre."""
    s = _per_network(factor, w.batch_size, (), "factor")
    if not bool((s > 0).all()):
        raise ValueError("scale factors must be > 0")
    return inr_affine(w, torch.eye(2, dtype=torch.float64) / s.view(-1, 1, 1), None, first_layer)


# ------------------------------------------------------------------------------------ random transforms


class _INRTransform(Transform):
    """Draw per-network parameters (:meth:`sample`), then apply them (:meth:`apply`)."""

    first_layer: str | None = None

    def forward(self, w, generator):
        inr_first_layer(w.spec, self.first_layer, type(self).__name__)   # fail before drawing
        value = self.sample(w.batch_size, generator, draw_device(w, generator))
        return self.apply(w, value.cpu())

    def sample(self, batch_size: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        raise NotImplementedError

    def apply(self, w: WeightSpace, value: Any) -> WeightSpace:
        raise NotImplementedError


class INRRotate(_INRTransform):
    """Rotate each INR's image by its own angle: ``degrees = d`` draws uniformly in ``[-d, d]``,
    ``degrees = (low, high)`` in ``[low, high]`` (counterclockwise as displayed; see the module)."""

    def __init__(self, degrees: float | tuple[float, float] = 15.0, first_layer: str | None = None):
        self.degrees = as_range(degrees, "degrees", symmetric=True)
        self.first_layer = first_layer

    def sample(self, batch_size, generator=None, device="cpu"):
        """``[B]`` angles in degrees."""
        return uniform(generator, (batch_size,), *self.degrees, device)

    def apply(self, w, value):
        return rotate_inr(w, value, self.first_layer)


class INRTranslate(_INRTransform):
    """Move each INR's image by its own shift, in coordinate units (the image spans ``[-1, 1]``; one
    pixel is ``2 / (size - 1)``). ``shift = s``: both axes uniform in ``[-s, s]``; ``(sx, sy)``: x in
    ``[-sx, sx]``, y in ``[-sy, sy]``; an axis may also be a ``(low, high)`` range:
    ``shift=((0.25, 0.25), (-0.5, 0.5))``."""

    def __init__(self, shift: Any = 0.1, first_layer: str | None = None):
        if isinstance(shift, (tuple, list)) and len(shift) == 2:
            self.shift = (as_range(shift[0], "shift x", symmetric=True), as_range(shift[1], "shift y", symmetric=True))
        else:
            r = as_range(shift, "shift", symmetric=True)
            self.shift = (r, r)
        self.first_layer = first_layer

    def sample(self, batch_size, generator=None, device="cpu"):
        """``[B, 2]`` shifts ``(tx, ty)``."""
        return torch.stack([uniform(generator, (batch_size,), *r, device) for r in self.shift], -1)

    def apply(self, w, value):
        return translate_inr(w, value, self.first_layer)


class INRScale(_INRTransform):
    """Magnify each INR's image about its centre by its own factor, log-uniform in
    ``scale = (low, high)`` (so ``s`` and ``1/s`` are equally likely for a symmetric range); one
    number is a fixed factor."""

    def __init__(self, scale: float | tuple[float, float] = (0.8, 1.25), first_layer: str | None = None):
        self.scale = as_range(scale, "scale", minimum=0.0, open_minimum=True)
        self.first_layer = first_layer

    def sample(self, batch_size, generator=None, device="cpu"):
        """``[B]`` magnification factors."""
        return log_uniform(generator, (batch_size,), *self.scale, device)

    def apply(self, w, value):
        return scale_inr(w, value, self.first_layer)
