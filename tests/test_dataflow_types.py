"""The dataflow contract: op kinds, documented op attributes, the activation vocabulary, and the
helpers the tracer's rules share."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import weightspace as ws
from weightspace.spec import vocab
from weightspace.spec.errors import SpecError
from weightspace.spec.serialize import spec_from_dict
from weightspace.spec.trace.context import RULES
from weightspace.spec.trace.labels import ATensor
from weightspace.spec.trace.rules.util import is_zero
from weightspace.spec.types import OP_ATTRS, Op, OpKind, SiteView

from architectures import ARCHITECTURES

# ------------------------------------------------------------------------------------ small extra networks


class StackNet(nn.Module):
    """Two branches stacked along a new axis: a ``stack`` op."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.stack([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)).sum(1)


class PReLUNet(nn.Module):
    """PReLU: an ``affine`` op with ``op='prelu'``."""

    def __init__(self):
        super().__init__()
        self.a, self.act, self.out = nn.Linear(4, 6), nn.PReLU(6), nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.act(self.a(x)))


class SourceNet(nn.Module):
    """A parameter read directly as input features: an ``affine`` op with ``op='source'``."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(5, 4))
        self.a, self.out = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.out(F.relu(self.a(self.tokens)) + self.a(x)[:, None].mean(0))


EXTRA = [(StackNet, (torch.randn(3, 4),)), (PReLUNet, (torch.randn(3, 4),)), (SourceNet, (torch.randn(3, 4),))]


@pytest.fixture(scope="module")
def all_specs(traced_arch):
    specs = {arch.name: traced_arch(arch)[2] for arch in ARCHITECTURES}
    for cls, x in EXTRA:
        torch.manual_seed(0)
        specs[cls.__name__] = ws.WeightSpaceSpec.from_module(cls(), x)
    return specs


# ------------------------------------------------------------------------------------ op kinds


def test_op_kind_is_a_str_enum():
    op = Op("linear", "fc1", (SiteView(0, 0, 3),), 1)
    assert op.kind is OpKind.LINEAR and isinstance(op.kind, str)
    assert op.kind == "linear" and f"_op_{op.kind}" == "_op_linear" and str(op.kind) == "linear"
    assert {"linear": 1}[op.kind] == 1
    assert Op(OpKind.NORM, "bn", (), 1).kind is OpKind.NORM


def test_unknown_op_kind_names_the_op_and_the_known_kinds():
    with pytest.raises(SpecError) as e:
        Op("lineer", "fc1", (SiteView(0, 0, 3),), 1)
    msg = str(e.value)
    assert "'lineer'" in msg and "fc1" in msg
    assert all(k.value in msg for k in OpKind)


def test_every_op_kind_is_documented():
    for k in OpKind:
        assert f"``{k.value}``" in OpKind.__doc__, k


def test_op_kinds_round_trip_through_json(all_specs):
    for name in ("recurrent", "pixel_shuffle", "StackNet", "PReLUNet"):
        spec = all_specs[name]
        text = spec.to_json()
        raw = json.loads(text)
        assert all(type(o["kind"]) is str for o in raw["dataflow"]["ops"])
        back = ws.WeightSpaceSpec.from_json(text)
        assert back == spec
        assert all(isinstance(o.kind, OpKind) for o in back.dataflow.ops)


def test_spec_from_dict_rejects_an_unknown_kind(all_specs):
    d = json.loads(all_specs["mlp_relu"].to_json())
    d["dataflow"]["ops"][0]["kind"] = "convolution"
    with pytest.raises(SpecError, match="unknown dataflow op kind 'convolution'"):
        spec_from_dict(d)


def test_the_tracer_produces_every_kind_and_only_documented_attrs(all_specs):
    emitted: dict[tuple[str, str], set[str]] = {}
    kinds = set()
    for name, spec in all_specs.items():
        for op in spec.dataflow.ops:
            assert isinstance(op.kind, OpKind), (name, op)
            kinds.add(op.kind)
            for key, _ in op.attrs:
                emitted.setdefault((op.kind, key), set()).add(name)
    assert kinds == set(OpKind)
    undocumented = {pair: names for pair, names in emitted.items()
                    if pair[1] not in OP_ATTRS or pair[0] not in OP_ATTRS[pair[1]][0]}
    assert not undocumented, f"attrs keys the tracer emits but OP_ATTRS does not document: {undocumented}"
    documented = {(k, key) for key, (ks, _) in OP_ATTRS.items() for k in ks}
    assert documented == set(emitted), f"documented but never emitted: {documented - set(emitted)}"


def test_op_attrs_values_are_meaningful(all_specs):
    ops = [op for spec in all_specs.values() for op in spec.dataflow.ops]
    for op in ops:
        if op.kind == OpKind.AFFINE:
            assert op.attr("op") in ("add", "sub", "mul", "div", "rsub", "rdiv", "prelu", "insert", "source")
        if op.kind == OpKind.MUL:
            assert op.attr("op") in ("mul", "div", "maximum", "minimum")
        if op.kind == OpKind.ADD:
            assert len(op.attr("signs")) == len(op.inputs)
        if op.kind == OpKind.ACTIVATION:
            assert isinstance(op.attr("op"), str)
        if op.kind == OpKind.LINEAR and op.attr("kernel_size") is not None:
            assert op.attr("groups") >= 1 and isinstance(op.attr("transposed"), bool)


# ------------------------------------------------------------------------------------ vocabulary


def test_parse_activation():
    assert vocab.parse_activation("relu") == ("relu", None)
    assert vocab.parse_activation("mul(0.5)") == ("mul", "0.5")
    assert vocab.parse_activation("clamp(0,None)") == ("clamp", "0,None")
    assert vocab.parse_activation("add(const)") == ("add", "const")
    for label in ("relu", "mul(0.5)", "hardtanh(6)", "clamp(-1,2)", "rsub(1)"):
        assert vocab.activation_label(*vocab.parse_activation(label)) == label


def test_activation_codes_are_stable():
    assert vocab.ACTIVATION_CODES == (
        "none", "relu", "leaky_relu", "prelu", "gelu", "silu", "tanh", "sigmoid", "sin", "softplus", "elu", "selu",
        "celu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "mish", "softmax", "log_softmax", "normalize",
        "softsign", "other")
    from weightspace.graph import vocab as graph_vocab
    assert graph_vocab.ACTIVATIONS is vocab.ACTIVATION_CODES and graph_vocab.activation_code is vocab.activation_code


def test_activation_code():
    code = vocab.activation_code
    assert code([]) == vocab.ACT["none"]
    assert code(["mul(0.5)", "add(1)", "pad", "max_pool2d", "mean"]) == vocab.ACT["none"]
    assert code(["mul(0.5)", "relu"]) == vocab.ACT["relu"]
    assert code(["avg_pool2d", "tanh", "relu"]) == vocab.ACT["tanh"]
    assert code(["clamp(0,6)"]) == vocab.ACT["hardtanh"]
    assert code(["hardtanh(1)"]) == vocab.ACT["hardtanh"]
    assert code(["exp"]) == vocab.ACT["other"]


def test_vocabulary_is_consistent():
    named = set(vocab.ACTIVATION_CODES) - {"none", "other"}
    assert named <= vocab.ACTIVATION_NAMES
    assert not (vocab.NON_ACTIVATIONS & vocab.ACTIVATION_NAMES)
    assert not any(n.startswith(vocab.NON_ACTIVATION_PREFIXES) for n in vocab.ACTIVATION_NAMES)
    for name, fn in vocab.ELEMENTWISE.items():
        assert fn.name == name
        if fn.generic:
            assert name in RULES  # registered by the generic elementwise rule
    for name in ("hardtanh", "clamp", "prelu", "softmax", "log_softmax", "softmin", "normalize"):
        assert name in RULES and not vocab.ELEMENTWISE[name].generic


def _torch_fn(name: str):
    for ns in (torch, F, torch.special):
        fn = getattr(ns, name, None)
        if callable(fn):
            return fn
    return None


@pytest.mark.parametrize("name", sorted(n for n, f in vocab.ELEMENTWISE.items() if f.positive or f.odd))
def test_claimed_symmetries_hold(name):
    """Every kind the vocabulary claims is true of the function: positively homogeneous, odd."""
    fn = vocab.ELEMENTWISE[name]
    f = _torch_fn(name)
    if name == "prelu":
        w = torch.tensor([0.25], dtype=torch.float64)
        f = lambda x: F.prelu(x, w)  # noqa: E731
    if name == "rrelu":
        f = lambda x: F.rrelu(x, training=False)  # noqa: E731
    assert f is not None, name
    x = torch.linspace(-0.9, 0.9, 37, dtype=torch.float64)
    if fn.positive:
        for s in (0.3, 2.0):
            assert torch.allclose(f(s * x / 2), s * f(x / 2), atol=1e-12), (name, s)
    if fn.odd:
        assert torch.allclose(f(-x), -f(x), atol=1e-12), name


def test_group_activation_reads_the_vocabulary():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.clamp(self.a(x) * 0.5, -2.0, 2.0)     # mul is linear: the activation is hardtanh
            h = torch.clamp(self.b(h), 0.0, 6.0)            # asymmetric bounds: clamp
            return self.out(torch.exp(-self.c(h)))           # neg is not an activation: exp

    spec = ws.WeightSpaceSpec.from_module(Net(), torch.randn(5, 3))
    assert [(g.name, g.activation) for g in spec.groups] == [("a", "hardtanh"), ("b", "clamp"), ("c", "exp")]
    labels = [label for s in spec.dataflow.sites for _, _, label in s.activations]
    assert labels[:3] == ["mul(0.5)", "hardtanh(2)", "clamp(0.0,6.0)"]


# ------------------------------------------------------------------------------------ rules


def test_shape_rules_are_registered():
    for name in ("view", "permute", "expand", "getitem", "split", "unbind", "cat", "stack"):
        assert name in RULES, name
    assert RULES["view"].__module__.endswith("rules.reshape")
    assert RULES["getitem"].__module__.endswith("rules.indexing")
    assert RULES["cat"].__module__.endswith("rules.joining")


def test_is_zero():
    def t(v, param=None):
        return ATensor(v, [None] * v.dim(), param=param)

    assert is_zero(t(torch.zeros(2, 3)))
    assert is_zero(t(torch.tensor(0.0)))
    assert not is_zero(t(torch.tensor([0.0, 1e-6])))
    assert not is_zero(t(torch.ones(1)))
    # empty: no entry can disagree with a rescaling of what it meets (cat adds nothing, + broadcasts to empty)
    assert is_zero(t(torch.zeros(0)))
    assert is_zero(t(torch.ones(2, 0, 3)))
    # a parameter is never a constant zero, whatever its current values
    assert not is_zero(t(torch.zeros(3), param="gate"))
    assert not is_zero(t(torch.zeros(0), param="gate"))


def test_zero_padding_along_positions_keeps_the_scaling():
    """Concatenating zeros (or nothing) beside a site's values along positions keeps its scaling."""
    class Pad(nn.Module):
        def __init__(self, extra):
            super().__init__()
            self.extra = extra
            self.a, self.out = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            h = F.relu(self.a(x))
            h = torch.cat([h, torch.zeros(h.shape[0], self.extra, h.shape[2])], dim=1)
            return self.out(h).sum(1)

    for extra in (0, 2):
        spec = ws.WeightSpaceSpec.from_module(Pad(extra), torch.randn(2, 5, 4))
        assert [(s.positive, s.sign) for s in spec.scalings] == [(True, False)], extra
