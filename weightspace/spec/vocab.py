"""The one vocabulary of elementwise ops: which traced labels are activations, which diagonal
symmetries each keeps, their stable integer codes for graph features, and the label format.

**Labels.** ``Site.activations`` holds ``(start, stop, label)`` triples, one per elementwise op applied
to neurons ``start:stop``. A label is a base name with an optional argument in parentheses::

    "relu"   "tanh"   "mul(0.5)"   "add(-1)"   "rsub(1)"   "hardtanh(6)"   "clamp(0,None)"
    "pow(2)"   "div(const)"   "max_pool2d"   "mean"   "pad"

The stored form is part of serialized specs: build labels with :func:`activation_label` and read
them with :func:`parse_activation`, never by splitting strings by hand.

**Symmetry kinds.** A diagonal symmetry multiplies a neuron's value by ``s``; an elementwise ``f``
lets it through when ``f(s * x) = s * f(x)``:

* ``"positive"`` (``s > 0``) when ``f`` is *positively homogeneous* (ReLU, leaky ReLU, abs, max)
* ``"sign"`` (``s = -1``) when ``f`` is *odd* (tanh, sin, a symmetric hardtanh)
* both when ``f`` is linear (``neg``), neither otherwise (sigmoid, GELU, exp ...).

**Activations.** :data:`ELEMENTWISE` lists every elementwise function the tracer knows by name. Those
marked ``activation`` are nonlinearities: the first one met on a group's neurons becomes
``GroupSpec.activation`` (its base name), and the graph builder encodes it with
:data:`ACTIVATION_CODES`. Labels in :data:`NON_ACTIVATIONS` (linear maps, reductions over
positions, pooling, resampling, masking) do not make a neuron nonlinear for the graph features.

Readers: ``spec/trace/rules`` (kinds of every elementwise rule, reduction and pooling),
``spec/trace/extract.py`` (``GroupSpec.activation``), ``graph/vocab.py`` (node activation codes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# ------------------------------------------------------------------------------------ symmetry kinds

POSITIVE = frozenset({"positive"})  # positive rescalings survive
SIGN = frozenset({"sign"})          # sign flips survive
ALL = POSITIVE | SIGN               # both (linear functions)
NONE: frozenset[str] = frozenset()  # neither


def kinds(positive: bool, odd: bool) -> frozenset[str]:
    """The diagonal symmetry kinds a function with these properties keeps."""
    return (POSITIVE if positive else NONE) | (SIGN if odd else NONE)


# ------------------------------------------------------------------------------------ elementwise functions


@dataclass(frozen=True)
class Elementwise:
    """An elementwise function of one tensor, as the tracer knows it.

    ``positive``: positively homogeneous, ``f(s x) = s f(x)`` for ``s > 0`` (keeps positive scalings).
    ``odd``: ``f(-x) = -f(x)`` (keeps sign flips).
    ``activation``: a nonlinearity that can name ``GroupSpec.activation`` (False for functions that
    are linear, or the identity on the values that matter: ``neg``, ``nan_to_num``).
    ``generic``: traced by the generic one-argument elementwise rule; False when a rule of its own
    reads the op's arguments (PReLU's slopes, clamp bounds, softmax's dim) and emits the label.
    """

    name: str
    positive: bool = False
    odd: bool = False
    activation: bool = True
    generic: bool = True

    @property
    def kinds(self) -> frozenset[str]:
        return kinds(self.positive, self.odd)


def _fns(names: str, **props) -> dict[str, Elementwise]:
    return {n: Elementwise(n, **props) for n in names.split()}


ELEMENTWISE: dict[str, Elementwise] = {
    # positively homogeneous
    **_fns("relu leaky_relu rrelu abs", positive=True),
    **_fns("prelu", positive=True, generic=False),      # the PReLU rule also records the slopes
    # odd
    **_fns("tanh sin softsign tanhshrink hardshrink softshrink tan atan arctan asinh arcsinh sinh erf asin atanh",
           odd=True),
    **_fns("hardtanh", odd=True, generic=False),        # the clamp rule: "hardtanh(h)" for bounds -h, h only
    # linear (or the identity on finite values): both kinds, not activations
    **_fns("neg negative nan_to_num", positive=True, odd=True, activation=False),
    # neither
    **_fns("relu6 elu selu celu gelu silu mish softplus sigmoid hardsigmoid hardswish logsigmoid cos exp exp2 "
           "expm1 log log2 log10 log1p sqrt rsqrt square reciprocal sign sgn floor ceil round trunc frac logit "
           "erfc erfinv sinc cosh acos i0 lgamma digamma glu_half"),
    **_fns("clamp", generic=False),                     # the clamp rule: "clamp(lo,hi)" for other bounds
    **_fns("softmax log_softmax softmin normalize", generic=False),
}

ACTIVATION_NAMES: frozenset[str] = frozenset(n for n, f in ELEMENTWISE.items() if f.activation)
"""Base names that can be a ``GroupSpec.activation`` of a traced spec."""


# ------------------------------------------------------------------------------------ reductions, pooling

# how a reduction over positions (not features) treats a rescaling of the reduced values
REDUCTIONS: dict[str, frozenset[str]] = {
    "sum": ALL, "mean": ALL, "nansum": ALL, "nanmean": ALL, "amax": POSITIVE, "amin": POSITIVE,
    "max": POSITIVE, "min": POSITIVE, "norm": POSITIVE, "std": POSITIVE, "var": NONE,
    "logsumexp": NONE, "prod": NONE, "median": POSITIVE, "nanmedian": POSITIVE,
    "linalg_vector_norm": POSITIVE, "vector_norm": POSITIVE, "all": NONE, "any": NONE,
    "argmax": NONE, "argmin": NONE, "count_nonzero": NONE, "aminmax": POSITIVE, "mode": NONE,
    "var_mean": NONE, "std_mean": NONE}

# pooling over 1-3 spatial dims (base name + "{k}d"): the kinds each keeps
POOLING: dict[str, frozenset[str]] = {
    "max_pool": POSITIVE, "avg_pool": ALL, "adaptive_avg_pool": ALL, "adaptive_max_pool": POSITIVE,
    "lp_pool": POSITIVE, "fractional_max_pool": POSITIVE}


# ------------------------------------------------------------------------------------ not activations

NON_ACTIVATIONS: frozenset[str] = frozenset({
    "mul", "add", "rsub", "neg", "pow", "pad", "sum", "mean", "nansum", "nanmean", "masked_fill", "where",
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear"})
"""Labels that leave a neuron linear for the graph features: scalar arithmetic, padding, reductions
and resampling over positions, masking. Pooling (:data:`NON_ACTIVATION_PREFIXES`) counts too."""

NON_ACTIVATION_PREFIXES: tuple[str, ...] = ("max_pool", "avg_pool", "adaptive_", "lp_pool", "fractional_")


def is_activation(label: str) -> bool:
    """Whether a label names a nonlinearity that can be a ``GroupSpec.activation``."""
    return parse_activation(label)[0] in ACTIVATION_NAMES


def group_activation(labels: Iterable[str]) -> str | None:
    """The base name of the first activation among ``labels`` (None if none is)."""
    for label in labels:
        base, _ = parse_activation(label)
        if base in ACTIVATION_NAMES:
            return base
    return None


# ------------------------------------------------------------------------------------ graph codes

ACTIVATION_CODES: tuple[str, ...] = (
    "none", "relu", "leaky_relu", "prelu", "gelu", "silu", "tanh", "sigmoid", "sin", "softplus", "elu", "selu",
    "celu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "mish", "softmax", "log_softmax", "normalize",
    "softsign", "other")
"""Stable integer codes (the index) of activations in graph node features. Append only."""

ACT: dict[str, int] = {n: i for i, n in enumerate(ACTIVATION_CODES)}

CODE_ALIASES: dict[str, str] = {"clamp": "hardtanh"}
"""Labels encoded as another activation's code."""


def activation_code(labels: Iterable[str]) -> int:
    """The code of the first nonlinearity among the labels applied to a neuron, in order (``none``
    if only :data:`NON_ACTIVATIONS` are; ``other`` for a nonlinearity without a code of its own)."""
    for label in labels:
        base, _ = parse_activation(label)
        base = CODE_ALIASES.get(base, base)
        if base in ACT and base != "none":
            return ACT[base]
        if base not in NON_ACTIVATIONS and not base.startswith(NON_ACTIVATION_PREFIXES):
            return ACT["other"]
    return ACT["none"]


# ------------------------------------------------------------------------------------ labels


def activation_label(base: str, argument: object = None) -> str:
    """The stored label of an elementwise op: ``base`` or ``base(argument)``."""
    return base if argument is None else f"{base}({argument})"


def parse_activation(label: str) -> tuple[str, str | None]:
    """``"mul(0.5)"`` -> ``("mul", "0.5")``; ``"relu"`` -> ``("relu", None)``."""
    base, paren, rest = label.partition("(")
    if not paren:
        return base, None
    return base, rest[:-1] if rest.endswith(")") else rest


__all__ = ["POSITIVE", "SIGN", "ALL", "NONE", "kinds", "Elementwise", "ELEMENTWISE", "ACTIVATION_NAMES",
           "REDUCTIONS", "POOLING", "NON_ACTIVATIONS", "NON_ACTIVATION_PREFIXES", "is_activation",
           "group_activation", "ACTIVATION_CODES", "ACT", "CODE_ALIASES", "activation_code", "activation_label",
           "parse_activation"]
