"""Plain, immutable records that make up a :class:`~weightspace.WeightSpaceSpec`.

An axis of a parameter is described by a *layout*: a tuple of :class:`Segment` s that tile the axis.
Each segment says which permutation group acts on that stretch of the axis (or none) and how::

    Segment(group="conv3", size=64, inner=16)   # 64 group elements, each owning 16 consecutive entries
                                                 # (conv channels flattened into a Linear: 64 x 4x4)
    Segment(group=None, size=10)                 # 10 fixed entries (input / output features)

so an axis of length ``sum(s.size * s.inner for s in layout)`` is permuted by gathering whole blocks.
The same layout form describes which scaling symmetry acts on an axis (:class:`ScaleAction`).

The *dataflow* (:class:`Site`, :class:`SiteView`, :class:`ParamUse`, :class:`Op`) records the
computation at the level of neuron sets, enough to draw every edge of a parameter graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Layout = tuple["Segment", ...]


@dataclass(frozen=True)
class Segment:
    """``size`` consecutive elements of ``group`` (or fixed entries when ``group`` is None),
    each element owning ``inner`` consecutive entries of the axis."""

    group: str | None
    size: int
    inner: int = 1

    @property
    def length(self) -> int:
        return self.size * self.inner


def layout_length(layout: Layout) -> int:
    return sum(s.length for s in layout)


def layout_groups(layout: Layout | None) -> tuple[str, ...]:
    """Names of the groups acting on a layout, in order of first appearance."""
    if layout is None:
        return ()
    seen: dict[str, None] = {}
    for s in layout:
        if s.group is not None:
            seen.setdefault(s.group)
    return tuple(seen)


@dataclass(frozen=True)
class ScaleAction:
    """A diagonal symmetry acting on one axis of a parameter: entry ``j`` is multiplied by
    ``s[scaling][element(j)] ** exponent`` where the layout maps entries to scaling elements."""

    axis: int
    layout: Layout
    exponent: int  # +1: the parameter writes the scaled neurons; -1: it reads them


@dataclass(frozen=True)
class ParamSpec:
    """One tensor of the state dict.

    ``axes[k]`` is the layout of axis ``k`` (None when no group acts on it: fixed input / output
    features, kernel taps, vocabulary rows). ``role`` is ``"parameter"`` (an ``nn.Parameter``),
    ``"statistic"`` (a float buffer that moves with the weights, e.g. BatchNorm running stats) or
    ``"buffer"`` (anything else, e.g. ``num_batches_tracked``: carried along, never permuted).
    """

    name: str
    shape: tuple[int, ...]
    axes: tuple[Layout | None, ...]
    role: str = "parameter"
    scales: tuple[ScaleAction, ...] = ()
    dtype: str = "float32"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def groups(self) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for layout in self.axes:
            for g in layout_groups(layout):
                out.setdefault(g)
        return tuple(out)

    @property
    def in_weight_space(self) -> bool:
        """Parameters and statistics are learned-on weights; plain buffers are not."""
        return self.role in ("parameter", "statistic")


@dataclass(frozen=True)
class GroupSpec:
    """A permutation group acting on ``size`` indices (neurons, channels, heads ...).

    ``heads = (parent, block)`` marks a head-structured group: its indices come in
    ``size // block`` blocks of ``block``; a valid element moves whole blocks as the ``parent``
    group's element says and permutes freely inside each block (attention heads, GroupNorm groups).
    ``activation`` names the first nonlinearity applied to these neurons (None if there is none).
    """

    name: str
    size: int
    activation: str | None = None
    heads: tuple[str, int] | None = None


@dataclass(frozen=True)
class ScalingSpec:
    """A diagonal symmetry on ``size`` neurons: multiplying the writers' outputs by ``s`` and the
    readers' inputs by ``1/s`` leaves the function unchanged, for ``s > 0`` when ``positive``
    (ReLU family, max pooling, identity) and for ``s = +-1`` when ``sign`` (tanh, sin, identity)."""

    name: str
    size: int
    positive: bool
    sign: bool
    group: str | None = None


# ----------------------------------------------------------------------------------------- dataflow


@dataclass(frozen=True)
class Site:
    """A set of neurons: the activations between parameterized ops.

    ``kind`` is ``"input"`` (network inputs, vocabulary rows), ``"hidden"``, ``"output"`` or
    ``"position"`` (a non-feature axis read as features, e.g. tokens in an MLP-Mixer).
    ``activations`` lists ``(start, stop, op)`` applied in order to neurons ``start:stop``.
    """

    id: int
    name: str
    size: int
    kind: str
    layout: Layout
    activations: tuple[tuple[int, int, str], ...] = ()


@dataclass(frozen=True)
class SiteView:
    """How the ``length * inner * outer`` entries of an op's input axis map to neurons of a site:
    entry ``j`` is neuron ``start + (j % (length * inner)) // inner`` at position
    ``(j // (length * inner)) * inner + j % inner`` (flattened spatial position, 0 if none)."""

    site: int
    start: int
    length: int
    inner: int = 1
    outer: int = 1

    @property
    def entries(self) -> int:
        return self.length * self.inner * self.outer


@dataclass(frozen=True)
class ParamUse:
    """A parameter (or a slice of it) as used by an op.

    ``dims[k]`` says what axis ``k`` of the parameter indexes: ``"out"`` (neurons of the op's
    output site), ``"in"`` (entries of the op's input view), ``"neuron"`` (neurons of the output
    site, for per-neuron parameters: biases, norm parameters), ``"kernel"`` (kernel taps),
    ``"fixed"`` (anything else). ``ranges[k]`` is the slice ``(start, stop)`` used on axis ``k``.
    """

    role: str
    name: str
    dims: tuple[str, ...]
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Op:
    """One step of the dataflow, from input views to one output site.

    kinds: ``linear`` (Linear, conv, conv-transpose, embedding, matmul with a parameter),
    ``norm`` (batch / layer / group / instance / RMS norm), ``affine`` (a parameter added to,
    multiplied with or inserted beside a site: standalone biases, LayerScale, tokens, PReLU),
    ``add`` (residual sum, ``attrs["signs"]``), ``concat`` (along features), ``stack`` (along a
    non-feature axis), ``mul`` (gating), ``attention`` (inputs q, k, v), ``activation`` (a new site
    holding a nonlinearity of another).
    """

    kind: str
    name: str
    inputs: tuple[SiteView, ...]
    output: int
    params: tuple[ParamUse, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    def param(self, role: str) -> ParamUse | None:
        for p in self.params:
            if p.role == role:
                return p
        return None


@dataclass(frozen=True)
class Dataflow:
    """Sites and the ops between them, in execution order."""

    sites: tuple[Site, ...] = ()
    ops: tuple[Op, ...] = field(default_factory=tuple)

    def site(self, site_id: int) -> Site:
        return self.sites[site_id]
