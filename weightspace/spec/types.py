"""Plain, immutable records that make up a :class:`~weightspace.WeightSpaceSpec`.

An axis of a parameter is described by a *layout*: a tuple of :class:`Segment` s that tile the axis.
Each segment says which permutation group acts on that stretch of the axis (or none) and how::

    Segment(group="conv3", size=64, inner=16)   # 64 group elements, each owning 16 consecutive entries
                                                 # (conv channels flattened into a Linear: 64 x 4x4)
    Segment(group=None, size=10)                 # 10 fixed entries (input / output features)

so an axis of length ``sum(s.size * s.inner for s in layout)`` is permuted by gathering whole blocks.
The same layout form describes which scaling symmetry acts on an axis (:class:`ScaleAction`).

The *dataflow* (:class:`Site`, :class:`SiteView`, :class:`ParamUse`, :class:`Op`) records the
computation at the level of neuron sets, enough to draw every edge of a parameter graph. What an op
does is its :class:`OpKind`; the keys of ``Op.attrs`` are documented in :data:`OP_ATTRS`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError

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
    ``activation`` names the first nonlinearity applied to these neurons (None if there is none): in
    a traced spec, the base name of an activation label (``"relu"``, ``"tanh"``, ``"hardtanh"``,
    ``"clamp"``, ``"softmax"`` ...; one of :data:`weightspace.spec.vocab.ACTIVATION_NAMES`); a hand-written
    spec may give any name.
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
    ``activations`` lists ``(start, stop, label)`` applied in order to neurons ``start:stop``: the
    elementwise ops on these neurons' values, labelled as :mod:`weightspace.spec.vocab` describes
    (``"relu"``, ``"mul(0.5)"``; read them with :func:`~weightspace.spec.vocab.parse_activation`).
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


class OpKind(enum.StrEnum):
    """What a dataflow :class:`Op` computes. Every op writes one output site from its input views;
    ``params`` are the :class:`ParamUse` s it reads (by role), ``attrs`` see :data:`OP_ATTRS`.

    ``linear``      Linear, convolution, transposed convolution, embedding, matmul / einsum with a
                    parameter. Inputs: one view, the features read (flattened positions as
                    ``inner`` / ``outer``; for an embedding, the vocabulary input site). Output: a new
                    site, one neuron per output feature or channel. Params: ``weight`` (dims ``out``,
                    ``in``, ``kernel`` taps, ``fixed``) and optionally ``bias`` (``out``).
    ``recurrent``   one layer and direction of ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``. Inputs: one view,
                    the layer's input features. Output: the layer's hidden units (H neurons). Params:
                    ``weight_ih``, ``weight_hh`` (``out``, ``in``; ``gates * H`` rows) and ``bias_ih``,
                    ``bias_hh`` (``out``) when the layer has biases.
    ``norm``        batch / instance / layer / group / RMS normalization. Inputs: one view, the
                    normalized features. Output: a new site with the same neurons (same group). Params:
                    ``weight``, ``bias`` and for batch / instance norm ``running_mean``, ``running_var``
                    (dims ``neuron`` or ``fixed``).
    ``affine``      a parameter combined with one site: a standalone bias or scale (LayerScale), PReLU,
                    tokens inserted beside the site, or a parameter read directly as features.
                    Inputs: zero or one view. Output: a new site with the same neurons (for a source,
                    one neuron per entry of the parameter's feature axis). Params: the ``value`` (for
                    PReLU the ``weight``), ``neuron`` dims along the site. ``attrs["op"]`` says which.
    ``add``         residual sum of two sites' values. Inputs: two views of the same length (same
                    neurons). Output: a new site with those neurons. No params; ``attrs["signs"]``.
    ``concat``      concatenation along features. Inputs: any number of views. Output: a site whose
                    neurons are the inputs' in order. No params.
    ``stack``       several sites' values joined along a non-feature axis (tokens, a stack dim).
                    Inputs: two or more views of the same length (their neurons are identified).
                    Output: a site with those neurons. Params: parameters joined along the same axis
                    (``value``, ``neuron`` dims).
    ``mul``         product (or quotient, max, min) of two sites' values: gating. Inputs: two views of
                    the same length. Output: a new site with those neurons. No params.
    ``attention``   softmax(q k^T) v. Inputs: three views, query, key and value (the projections'
                    sites). Output: a new site with the value's neurons. No params.
    ``activation``  an elementwise function of a site whose values are also read elsewhere. Inputs: one
                    view. Output: a new site with the same neurons holding the function's values. No
                    params; ``attrs["op"]`` is the activation label.
    ``rearrange``   pixel shuffle: blocks of ``r * r`` input channels become one output channel at
                    ``r x r`` positions. Inputs: one view. Output: a site of ``length / r**2`` neurons.
                    No params.
    """

    LINEAR = "linear"
    RECURRENT = "recurrent"
    NORM = "norm"
    AFFINE = "affine"
    ADD = "add"
    CONCAT = "concat"
    STACK = "stack"
    MUL = "mul"
    ATTENTION = "attention"
    ACTIVATION = "activation"
    REARRANGE = "rearrange"

    @classmethod
    def of(cls, kind: "OpKind | str", op: str = "") -> "OpKind":
        """``kind`` as an :class:`OpKind`; a :class:`SpecError` naming ``op`` if it is not one."""
        if isinstance(kind, cls):
            return kind
        try:
            return cls(kind)
        except ValueError:
            known = ", ".join(k.value for k in cls)
            where = f" of op '{op}'" if op else ""
            raise SpecError(f"unknown dataflow op kind {kind!r}{where}; the known kinds are {known}") from None


_K = OpKind
OP_ATTRS: dict[str, tuple[tuple[OpKind, ...], str]] = {
    # key: (kinds whose ops carry it, meaning)
    "op": ((_K.AFFINE, _K.MUL, _K.ACTIVATION, _K.REARRANGE),
           "which operation. affine: 'add', 'sub', 'mul', 'div' (parameter applied to the site), 'rsub', "
           "'rdiv' (parameter minus / over the site), 'prelu' (PReLU slopes), 'insert' (parameter tokens "
           "joined beside the site along 'axis'), 'source' (no input: a parameter read as features). mul: "
           "'mul', 'div', 'maximum', 'minimum'. activation: the activation label (as in Site.activations). "
           "rearrange: 'pixel_shuffle'"),
    "axis": ((_K.AFFINE, _K.STACK, _K.CONCAT),
             "the tensor dim along which values are joined (affine 'insert', stack); on a concat, 0 marks "
             "the stacked final states of a recurrent layer's layers and directions"),
    "signs": ((_K.ADD,), "per input, the factor of its values in the sum: (1, alpha) for x + alpha * y, "
                         "(1, -alpha) for x - alpha * y"),
    # linear: convolutions
    "stride": ((_K.LINEAR,), "convolution stride"),
    "padding": ((_K.LINEAR,), "convolution padding (as given: int, tuple or 'same' / 'valid')"),
    "output_padding": ((_K.LINEAR,), "transposed convolution output padding"),
    "dilation": ((_K.LINEAR,), "convolution dilation"),
    "groups": ((_K.LINEAR,), "convolution groups: channel blocks that only see their own block"),
    "transposed": ((_K.LINEAR,), "True for a transposed convolution (weight [C_in, C_out / groups, ...])"),
    "kernel_size": ((_K.LINEAR,), "convolution kernel size (the weight's spatial shape); present on every "
                                  "convolution"),
    # linear: embeddings
    "embedding": ((_K.LINEAR,), "True for an embedding lookup (the input view is the vocabulary site)"),
    "padding_idx": ((_K.LINEAR,), "embedding padding index (None if none)"),
    # recurrent
    "mode": ((_K.RECURRENT,), "'lstm', 'gru', 'rnn_tanh' or 'rnn_relu'"),
    "gates": ((_K.RECURRENT,), "gate blocks per weight (4 LSTM, 3 GRU, 1 RNN): rows g*H:(g+1)*H"),
    "reverse": ((_K.RECURRENT,), "True for the reverse direction of a bidirectional layer"),
    # norm
    "type": ((_K.NORM,), "'batch', 'instance', 'layer', 'rms' or 'group'"),
    "eps": ((_K.NORM,), "the epsilon of the normalization (None: the default of RMS norm)"),
    "normalized_shape": ((_K.NORM,), "layer / RMS norm: the trailing shape normalized over"),
    "num_groups": ((_K.NORM,), "group norm: the number of channel groups"),
    # attention
    "heads": ((_K.ATTENTION,), "number of heads (1 when the value is not split into heads)"),
    "head_dim": ((_K.ATTENTION,), "value neurons per head"),
    "causal": ((_K.ATTENTION,), "scaled_dot_product_attention: causal masking"),
    "scale": ((_K.ATTENTION,), "scaled_dot_product_attention: the factor of q k^T"),
    "masked": ((_K.ATTENTION,), "scaled_dot_product_attention: an attention mask was given"),
    # rearrange
    "factor": ((_K.REARRANGE,), "pixel shuffle upscale factor r"),
}
"""Every key the built-in rules put into ``Op.attrs``: the op kinds it appears on and its meaning.
Rules registered by users may add keys of their own."""
del _K


@dataclass(frozen=True)
class Op:
    """One step of the dataflow, from input views to one output site.

    ``kind`` is an :class:`OpKind` (a plain string is converted; an unknown one is a
    :class:`SpecError`); its docstring says what the inputs, output and params of each kind are.
    ``attrs`` are ``(key, value)`` pairs, sorted by key, with keys from :data:`OP_ATTRS`.
    """

    kind: OpKind
    name: str
    inputs: tuple[SiteView, ...]
    output: int
    params: tuple[ParamUse, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if not isinstance(self.kind, OpKind):
            object.__setattr__(self, "kind", OpKind.of(self.kind, self.name))

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
