"""Issue 21: attention masks and additive biases keep the head symmetry; composite activations
are named by the function the neurons see.

* a mask broadcast over heads (padding, a causal mask built as a tensor) leaves heads permutable;
* a per-head additive bias computed from parameters (a learned ALiBi-style bias, a relative
  position bias table gathered by an index buffer, as in Swin) permutes with the heads, through
  ``F.scaled_dot_product_attention``'s ``attn_mask`` and through hand-written ``softmax(qk + b)``;
* a constant that differs between heads pins them, and the spec's notes say which op did;
* grouped-query attention (``enable_gqa``) keeps key / value heads with their query heads;
* GPT-2's ``gelu_new`` written out of tanh and products is labelled ``gelu``, with no sign flip.

Also issue 20's op-level gaps met in torchvision / timm models, written here in plain torch:
stochastic depth, a qkv bias concatenated from parameters (EVA), weight standardization (BiT).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import weightspace as ws

H, D, L, E = 4, 4, 5, 16


class Block(nn.Module):
    """Pre-norm attention block; ``mode`` picks the mask / bias handed to the attention."""

    def __init__(self, mode: str, eager: bool = False, kv_heads: int = H):
        super().__init__()
        self.mode, self.eager, self.kv = mode, eager, kv_heads
        self.norm = nn.LayerNorm(E)
        self.q = nn.Linear(E, H * D)
        self.k = nn.Linear(E, kv_heads * D)
        self.v = nn.Linear(E, kv_heads * D)
        self.o = nn.Linear(H * D, E)
        self.fc1, self.fc2 = nn.Linear(E, 24), nn.Linear(24, E)
        self.head = nn.Linear(E, 3)
        if mode == "alibi":
            self.bias = nn.Parameter(torch.randn(H, L, L) * 0.5)
        if mode == "table":  # Swin: a (2L-1, H) table gathered by relative offsets
            self.table = nn.Parameter(torch.randn(2 * L - 1, H) * 0.5)
            pos = torch.arange(L)
            self.register_buffer("index", (pos[:, None] - pos[None, :] + L - 1).flatten(), persistent=False)
        if mode == "per_head_constant":
            self.register_buffer("slopes", torch.linspace(0.1, 1.0, H).view(H, 1, 1) * torch.ones(H, L, L),
                                 persistent=False)

    def additive(self, x, pad):
        if self.mode == "padding":  # (B, 1, 1, L): the same for every head and query
            return torch.zeros(pad.shape, dtype=x.dtype).masked_fill(pad, -1e4)[:, None, None, :]
        if self.mode == "causal":  # (L, L) built as a tensor
            return torch.full((L, L), -1e4, dtype=x.dtype).triu(1)
        if self.mode == "alibi":
            return self.bias
        if self.mode == "table":
            return self.table[self.index].view(L, L, H).permute(2, 0, 1)
        return -self.slopes

    def forward(self, x, pad):
        B = x.shape[0]
        h = self.norm(x)
        q = self.q(h).view(B, L, H, D).transpose(1, 2)
        k = self.k(h).view(B, L, self.kv, D).transpose(1, 2)
        v = self.v(h).view(B, L, self.kv, D).transpose(1, 2)
        bias = self.additive(x, pad)
        if self.eager:
            scores = q @ k.transpose(-2, -1) / math.sqrt(D) + bias
            a = scores.softmax(-1) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=self.kv != H)
        x = x + self.o(a.transpose(1, 2).reshape(B, L, H * D))
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, L, E, generator=g, dtype=torch.float64)
    pad = torch.zeros(3, L, dtype=torch.bool)
    pad[0, -2:] = True
    return x, pad


def _check_symmetry(model, spec, inputs):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    moved = ws.act(sd, spec, ws.random_element(spec, torch.Generator().manual_seed(3)))
    assert [k for k in sd if not torch.equal(sd[k], moved[k])]
    with torch.no_grad():
        y = model(*inputs)
        model.load_state_dict(moved)
        y_moved = model(*inputs)
        model.load_state_dict(sd)
    assert y.abs().max() > 0
    assert ((y - y_moved).abs().max() / y.abs().max()).item() < 1e-10


def _head_groups(spec):
    return [g for g in spec.groups if g.heads is not None]


@pytest.mark.parametrize("eager", [False, True], ids=["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["padding", "causal", "alibi", "table"])
def test_masks_and_per_head_biases_keep_the_heads(mode, eager):
    torch.manual_seed(0)
    model = Block(mode, eager).double().eval()
    inputs = _inputs()
    spec = ws.WeightSpaceSpec.from_module(model, inputs)
    heads = _head_groups(spec)
    assert heads, f"{mode}: the heads were pinned"
    parent = heads[0].heads[0]
    assert spec.group(parent).size == H
    if mode == "alibi":  # the bias's head axis permutes with the heads
        assert spec["bias"].axes[0][0].group == parent
    if mode == "table":
        assert spec["table"].axes[0] is None and spec["table"].axes[1][0].group == parent
    _check_symmetry(model, spec, inputs)


def test_a_constant_differing_between_heads_pins_them_and_says_so():
    model = Block("per_head_constant").double().eval()
    spec = ws.WeightSpaceSpec.from_module(model, _inputs())
    assert not _head_groups(spec)
    assert any("scaled_dot_product_attention" in n and "pins" in n for n in spec.notes), spec.notes
    assert "notes:" in str(spec)
    _check_symmetry(model, spec, _inputs())


def test_grouped_query_attention_shares_key_value_heads():
    model = Block("padding", kv_heads=2).double().eval()
    spec = ws.WeightSpaceSpec.from_module(model, _inputs())
    kv = spec["k.weight"].axes[0][0].group
    assert spec.group(kv).size == 2 and spec["v.weight"].axes[0][0].group == kv
    q = spec.group(spec["q.weight"].axes[0][0].group)
    assert q.heads == (kv, H // 2)
    _check_symmetry(model, spec, _inputs())


class GeluNewMLP(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(6, 12), nn.Linear(12, 3), act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def gelu_new(x):  # GPT-2's activation, as transformers writes it
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


@pytest.mark.parametrize("act,label", [(gelu_new, "gelu"), (lambda x: x * torch.sigmoid(x), "silu"),
                                       (lambda x: x * torch.tanh(F.softplus(x)), "mish")])
def test_composite_activation_is_named_by_the_function(act, label):
    model = GeluNewMLP(act).double().eval()
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = ws.WeightSpaceSpec.from_module(model, x)
    (group,) = spec.hidden_groups
    assert group.activation == label
    assert not any(s.sign for s in spec.scalings), "no sign-flip symmetry for a GELU-like activation"
    _check_symmetry(model, spec, (x,))


def test_a_product_of_unrelated_branches_is_not_renamed():
    """tanh(x) * sigmoid(x) is no vocabulary activation: the pieces' label stays."""
    model = GeluNewMLP(lambda x: torch.tanh(x) * torch.sigmoid(x)).double().eval()
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = ws.WeightSpaceSpec.from_module(model, x)
    assert spec.hidden_groups[0].activation == "tanh"


def stochastic_depth(input, p, mode, training=True):
    """torchvision.ops.stochastic_depth's contract (torchvision wraps it for fx the same way)."""
    if not training or p == 0.0:
        return input
    keep = torch.empty([input.shape[0]] + [1] * (input.dim() - 1), dtype=input.dtype).bernoulli_(1 - p)
    return input * keep.div_(1 - p)


torch.fx.wrap("stochastic_depth")


class StochasticDepthBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0, self.fc1, self.fc2, self.out = nn.Linear(4, 8), nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.fc0(x)
        h = h + stochastic_depth(self.fc2(F.relu(self.fc1(h))), 0.2, "row", self.training)
        return self.out(h)


def test_stochastic_depth_is_the_identity_in_eval_mode():
    """Issue 20: torchvision's stochastic_depth (EfficientNet, ConvNeXt) had no rule."""
    model = StochasticDepthBlock().double().eval()
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = ws.WeightSpaceSpec.from_module(model, x)
    assert len(spec.hidden_groups) == 2
    _check_symmetry(model, spec, (x,))


class ConcatBiasAttention(nn.Module):
    """timm's EVA / BEiT attention: the fused qkv bias is ``cat(q_bias, zeros, v_bias)``."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(E, 3 * H * D, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.randn(H * D)), nn.Parameter(torch.randn(H * D))
        self.register_buffer("k_bias", torch.zeros(H * D), persistent=False)
        self.proj, self.head = nn.Linear(H * D, E), nn.Linear(E, 2)

    def forward(self, x):
        B = x.shape[0]
        qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        q, k, v = qkv.reshape(B, L, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v)
        return self.head(x + self.proj(a.transpose(1, 2).reshape(B, L, H * D))).mean(1)


def test_a_bias_concatenated_from_parameters_keeps_the_heads():
    """Was: the concatenation pinned every parameter axis in it, and with it the whole fused
    projection: no head groups."""
    model = ConcatBiasAttention().double().eval()
    x = torch.randn(3, L, E, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = ws.WeightSpaceSpec.from_module(model, x)
    heads = _head_groups(spec)
    assert heads and spec.group(heads[0].heads[0]).size == H
    assert spec["q_bias"].axes[0] is not None and spec["v_bias"].axes[0] is not None
    _check_symmetry(model, spec, (x,))


class StdConvNet(nn.Module):
    """Weight standardization (BiT / timm ResNetV2 ``StdConv2d``): each filter normalized over its
    input channels and kernel positions, through a weight reshaped to (1, out, in * kh * kw)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 2)

    @staticmethod
    def std_conv(x, conv):
        w = F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None, training=True, momentum=0.0,
                         eps=1e-6).reshape_as(conv.weight)
        return F.conv2d(x, w, conv.bias, padding=1)

    def forward(self, x):
        h = F.relu(self.std_conv(x, self.c1))
        return self.fc(F.relu(self.std_conv(h, self.c2)).mean((2, 3)))


def test_weight_standardization_keeps_the_channel_groups():
    """Issue 20: the reshape merging a weight's input and kernel axes was refused."""
    model = StdConvNet().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = ws.WeightSpaceSpec.from_module(model, x)
    assert [g.size for g in spec.hidden_groups] == [8, 6]
    assert spec["c2.weight"].axes[1] is not None and spec["c2.weight"].axes[2] is None
    _check_symmetry(model, spec, (x,))


class RepeatKV(nn.Module):
    """Grouped-query attention written as ``transformers``' eager ``repeat_kv``: key / value heads
    copied to every query head of their group with ``expand`` + ``reshape``, a padding mask added."""

    def __init__(self, kv_heads: int = 2):
        super().__init__()
        self.kv = kv_heads
        self.q, self.o = nn.Linear(E, H * D), nn.Linear(H * D, 3)
        self.k, self.v = nn.Linear(E, kv_heads * D), nn.Linear(E, kv_heads * D)

    def repeat(self, t):
        B, _, n, d = t.shape
        return t[:, :, None].expand(B, self.kv, H // self.kv, n, d).reshape(B, H, n, d)

    def forward(self, x, pad):
        B = x.shape[0]
        q = self.q(x).view(B, L, H, D).transpose(1, 2)
        k = self.k(x).view(B, L, self.kv, D).transpose(1, 2)
        v = self.v(x).view(B, L, self.kv, D).transpose(1, 2)
        mask = torch.zeros(pad.shape, dtype=x.dtype).masked_fill(pad, -1e4)[:, None, None, :]
        a = (q @ self.repeat(k).transpose(-2, -1) / math.sqrt(D) + mask).softmax(-1) @ self.repeat(v)
        return self.o(a.transpose(1, 2).reshape(B, L, H * D)).mean(1)


@pytest.mark.parametrize("kv_heads", [2, 1], ids=["grouped", "multi_query"])
def test_repeated_key_value_heads_keep_query_heads_free_in_their_group(kv_heads):
    model = RepeatKV(kv_heads).double().eval()
    spec = ws.WeightSpaceSpec.from_module(model, _inputs())
    (seg,) = spec["q.weight"].axes[0]
    q = spec.group(seg.group)
    if kv_heads == 2:
        kv = spec["k.weight"].axes[0][0].group
        assert spec.group(kv).size == 2 and q.heads == (kv, H // 2) and spec["v.weight"].axes[0][0].group == kv
    else:  # one key / value head: the query heads are one free group
        assert q.size == H and seg.inner == D and spec["k.weight"].axes[0] is None
    _check_symmetry(model, spec, _inputs())
