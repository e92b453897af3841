"""A zoo of architectures for the symmetry tests: every op family the tracer claims to support."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from weightspace.models import SIREN, VGG, SmallCNN, TinyTransformer, mlp, resnet20, resnet_bottleneck


@dataclass
class Arch:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], tuple]
    groups: int | None = None  # expected number of permutation groups, where known
    computed_weights: bool = False  # weights computed in forward (parametrizations): not dataflow edges


def img(c=3, h=8, w=8, n=2):
    return lambda g: (torch.randn(n, c, h, w, generator=g),)


def seq(t=6, d=16, n=2):
    return lambda g: (torch.randn(n, t, d, generator=g),)


# ------------------------------------------------------------------------------------ CNN pieces


class DenseNetish(nn.Module):
    """Two dense layers: each concatenates its output to its input along channels."""

    def __init__(self, c=4, growth=3):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn1, self.conv1 = nn.BatchNorm2d(c), nn.Conv2d(c, growth, 3, padding=1)
        self.bn2, self.conv2 = nn.BatchNorm2d(c + growth), nn.Conv2d(c + growth, growth, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(c + 2 * growth)
        self.fc = nn.Linear(c + 2 * growth, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.conv1(F.relu(self.bn1(x)))], dim=1)
        x = torch.cat([x, self.conv2(F.relu(self.bn2(x)))], 1)
        x = F.relu(self.bn3(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class MobileBlock(nn.Module):
    """Depthwise-separable convs, a grouped conv, GroupNorm, SiLU, InstanceNorm, hardswish."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.gn = nn.GroupNorm(2, 8)
        self.pw = nn.Conv2d(8, 12, 1)
        self.grouped = nn.Conv2d(12, 8, 3, padding=1, groups=4)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.dw_mult = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.silu(self.gn(self.dw(x)))
        x = F.relu6(self.pw(x))
        x = F.hardswish(self.inorm(self.grouped(x)))
        x = F.leaky_relu(self.dw_mult(x), 0.1)
        return self.fc(x.mean(dim=(2, 3)))


class ConvAutoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.enc2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.dec1 = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
        self.dec_g = nn.ConvTranspose2d(6, 4, 3, padding=1, groups=2)
        self.dec2 = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
        self.prelu = nn.PReLU(6)

    def forward(self, x):
        h = torch.tanh(self.enc2(F.relu(self.enc1(x))))
        h = self.prelu(self.dec1(h))
        return self.dec2(torch.sigmoid(self.dec_g(h)))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 5, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.c2 = nn.Conv1d(8, 8, 3, dilation=2, padding=2)
        self.fc = nn.Linear(8 * 4, 3)

    def forward(self, x):
        x = F.max_pool1d(F.relu(self.bn(self.c1(x))), 2)
        x = F.avg_pool1d(F.elu(self.c2(x)), 2)
        return self.fc(x.reshape(x.shape[0], -1))


class PixelShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4 * 4, 3, padding=1)
        self.ps = nn.PixelShuffle(2)
        self.c3 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        return self.c3(F.relu(self.ps(F.relu(self.c2(F.relu(self.c1(x)))))))


# ------------------------------------------------------------------------------------ attention


class HandAttention(nn.Module):
    """Separate q/k/v Linears, explicit softmax(QK^T / sqrt(d)) V with a causal mask."""

    def __init__(self, d=16, h=4):
        super().__init__()
        self.h = h
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        B, T, C = x.shape
        H = self.h
        q = self.q(x).view(B, T, H, C // H).transpose(1, 2)
        k = self.k(x).view(B, T, H, C // H).transpose(1, 2)
        v = self.v(x).view(B, T, H, C // H).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.o(y)
        x = x + self.fc2(F.gelu(self.fc1(self.ln(x))))
        return self.head(x[:, -1])


class FusedQKVChunk(nn.Module):
    """One fused qkv Linear split with chunk, F.scaled_dot_product_attention, pre-norm block."""

    def __init__(self, d=16, h=2):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.out = nn.Linear(d, 2)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + self.mlp(self.ln2(x))
        return self.out(x.mean(1))


class TimmStyleViT(nn.Module):
    """Patch embedding conv, cls token and positional embedding (bare Parameters), fused qkv with
    reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4) and unbind, LayerScale, cls-token readout."""

    def __init__(self, d=12, h=3, depth=2):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 5, d) * 0.1)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            blk = nn.Module()
            blk.n1, blk.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            blk.qkv, blk.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            blk.fc1, blk.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
            blk.gamma = nn.Parameter(torch.rand(d) + 0.5)
            self.blocks.append(blk)
        self.h = h
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        B, N, C = x.shape
        x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1) + self.pos
        for blk in self.blocks:
            qkv = blk.qkv(blk.n1(x)).reshape(B, N + 1, 3, self.h, C // self.h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            a = (q @ k.transpose(-2, -1)) * (C // self.h) ** -0.5
            y = (a.softmax(-1) @ v).transpose(1, 2).reshape(B, N + 1, C)
            x = x + blk.proj(y)
            x = x + blk.gamma * blk.fc2(F.gelu(blk.fc1(blk.n2(x))))
        return self.head(self.norm(x)[:, 0])


class SwiGLULM(nn.Module):
    """Token embedding tied to the output head, RMSNorm, SwiGLU MLP, GLU, rsqrt-normalization."""

    def __init__(self, vocab=20, d=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.norm = nn.RMSNorm(d)
        self.w1, self.w3, self.w2 = (nn.Linear(d, 24, bias=False), nn.Linear(d, 24, bias=False),
                                     nn.Linear(24, d, bias=False))
        self.glu_in = nn.Linear(d, 2 * d)
        self.glu_out = nn.Linear(d, d)

    def forward(self, ids):
        h = self.emb(ids)
        h = h + self.w2(F.silu(self.w1(self.norm(h))) * self.w3(self.norm(h)))
        h = h + self.glu_out(F.glu(self.glu_in(h), dim=-1))
        return F.linear(h, self.emb.weight)


class CrossAttention(nn.Module):
    """nn.MultiheadAttention with different key / value widths, queries from one stream and keys from
    another; need_weights returned but unused."""

    def __init__(self):
        super().__init__()
        self.q_in = nn.Linear(5, 8)
        self.kv_in = nn.Linear(7, 6)
        self.mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=6, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x, ctx):
        q = torch.tanh(self.q_in(x))
        kv = F.relu(self.kv_in(ctx))
        y, _ = self.mha(q, kv, kv)
        return self.out(y + q)


class Mixer(nn.Module):
    """MLP-Mixer block: token mixing by transposing tokens into the feature axis."""

    def __init__(self, tokens=6, d=8):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.tok1, self.tok2 = nn.Linear(tokens, 12), nn.Linear(12, tokens)
        self.ch1, self.ch2 = nn.Linear(d, 16), nn.Linear(16, d)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        y = self.ln1(x).transpose(1, 2)
        x = x + self.tok2(F.gelu(self.tok1(y))).transpose(1, 2)
        x = x + self.ch2(F.gelu(self.ch1(self.ln2(x))))
        return self.head(x.mean(1))


class MLPWithNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.bn = nn.Linear(6, 10), nn.BatchNorm1d(10)
        self.l2, self.ln = nn.Linear(10, 12), nn.LayerNorm(12)
        self.l3 = nn.Linear(12, 8)
        self.l4 = nn.Linear(8, 3)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = self.drop(F.relu(self.bn(self.l1(x))))
        x = torch.tanh(self.ln(self.l2(x)))
        x = F.softplus(self.l3(x)) + F.sigmoid(self.l3(x))
        return self.l4(x)


class RecurrentNet(nn.Module):
    """An input projection, a 2-layer bidirectional LSTM and a GRU; readouts from outputs and states."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 5)
        self.lstm = nn.LSTM(5, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(12, 4, batch_first=True)
        self.out = nn.Linear(4, 2)
        self.state = nn.Linear(6, 2)

    def forward(self, x):
        y, (h, c) = self.lstm(torch.tanh(self.inp(x)))
        z, hg = self.gru(y)
        return self.out(z[:, -1]) + self.state(h[-1]) + self.out(hg[0])


class UNet(nn.Module):
    """Encoder-decoder with a transposed-conv upsampling and a skip concatenation."""

    def __init__(self):
        super().__init__()
        self.e1, self.e2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.d1, self.out = nn.Conv2d(8, 4, 3, padding=1), nn.Conv2d(4, 1, 1)

    def forward(self, x):
        a = F.relu(self.e1(x))
        b = F.relu(self.e2(F.max_pool2d(a, 2)))
        return self.out(F.relu(self.d1(torch.cat([a, self.up(b)], 1))))


class Reparametrized(nn.Module):
    """Weight-normalized and spectrally normalized layers (parametrizations with their buffers)."""

    def __init__(self):
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm, weight_norm
        self.a = weight_norm(nn.Linear(4, 6))
        self.b = spectral_norm(nn.Linear(6, 5))
        self.c = nn.Linear(5, 2)

    def forward(self, x):
        return self.c(torch.tanh(self.b(F.relu(self.a(x)))))


class SqueezeExcite(nn.Module):
    """A channel-gating branch (squeeze-and-excitation) multiplying conv features."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.f1, self.f2 = nn.Linear(8, 2), nn.Linear(2, 8)
        self.o = nn.Linear(8, 2)

    def forward(self, x):
        h = F.relu(self.c(x))
        w = torch.sigmoid(self.f2(F.relu(self.f1(h.mean((2, 3))))))
        return self.o((h * w[:, :, None, None]).mean((2, 3)))


class EinsumAttention(nn.Module):
    """Attention written with einsum, heads as an unflattened axis, no transposes."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        q, k, v = (t.unflatten(-1, (2, 4)) for t in (self.q(x), self.k(x), self.v(x)))
        a = torch.einsum("bqhd,bkhd->bhqk", q, k).softmax(-1)
        return self.o(torch.einsum("bhqk,bkhd->bqhd", a, v).flatten(2).mean(1))


class Volumetric(nn.Module):
    """Conv3d with BatchNorm3d, max pooling with indices and unpooling, global max pooling."""

    def __init__(self):
        super().__init__()
        self.a, self.bn = nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4)
        self.b = nn.Conv3d(4, 4, 1)
        self.o = nn.Linear(4, 2)

    def forward(self, x):
        h, idx = F.max_pool3d(F.relu(self.bn(self.a(x))), 2, return_indices=True)
        h = F.max_unpool3d(h, idx, 2)
        return self.o(F.adaptive_max_pool3d(self.b(h), 1).flatten(1))


def _encoder(norm_first: bool):
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True, norm_first=norm_first)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


ARCHITECTURES = [
    Arch("mlp_relu", lambda: mlp([5, 16, 16, 3]), lambda g: (torch.randn(4, 5, generator=g),), 2),
    Arch("mlp_tanh", lambda: mlp([5, 12, 9, 3], "tanh"), lambda g: (torch.randn(4, 5, generator=g),), 2),
    Arch("mlp_leaky", lambda: mlp([5, 12, 9, 7, 3], "leaky_relu"), lambda g: (torch.randn(4, 5, generator=g),), 3),
    Arch("mlp_norms", MLPWithNorms, lambda g: (torch.randn(4, 6, generator=g),), 3),
    Arch("siren", lambda: SIREN(2, (32, 32), 1), lambda g: (torch.rand(16, 2, generator=g) * 2 - 1,), 2),
    Arch("vgg_bn", lambda: VGG((8, 16), in_channels=3, image_size=8, num_classes=4, hidden=12), img(), 3),
    Arch("small_cnn", lambda: SmallCNN(3, 8, 5), img(h=16, w=16), 3),
    Arch("resnet20", lambda: resnet20(num_classes=5, width=4), img(), 12),
    Arch("bottleneck", lambda: resnet_bottleneck((1, 2), width=4, num_classes=3), img(), None),
    Arch("densenet", DenseNetish, img(), None),
    Arch("mobile", MobileBlock, img(), None),
    Arch("conv_autoencoder", ConvAutoencoder, img(c=1, h=8, w=8), None),
    Arch("conv1d", Conv1dNet, lambda g: (torch.randn(2, 4, 16, generator=g),), 2),
    Arch("pixel_shuffle", PixelShuffleNet, img(), None),
    Arch("transformer_post", lambda: _encoder(False), seq(), None),
    Arch("transformer_pre", lambda: _encoder(True), seq(), None),
    Arch("tiny_transformer", lambda: TinyTransformer(in_features=16, seq_len=6, dim=16, heads=4), seq(), 9),
    Arch("tiny_lm", lambda: TinyTransformer(vocab_size=30, seq_len=6, dim=16, heads=2, norm_first=False,
                                            activation="relu"),
         lambda g: (torch.randint(0, 30, (2, 6), generator=g),), 9),
    Arch("hand_attention", HandAttention, seq(), 4),
    Arch("fused_qkv_chunk", FusedQKVChunk, seq(), 4),
    Arch("vit", TimmStyleViT, img(h=8, w=8), None),
    Arch("swiglu_lm", SwiGLULM, lambda g: (torch.randint(0, 20, (2, 5), generator=g),), None),
    Arch("cross_attention", CrossAttention,
         lambda g: (torch.randn(2, 4, 5, generator=g), torch.randn(2, 3, 7, generator=g)), None),
    Arch("mixer", Mixer, seq(t=6, d=8), None),
    Arch("recurrent", RecurrentNet, lambda g: (torch.randn(2, 5, 3, generator=g),), 6),
    Arch("unet", UNet, img(c=1, h=8, w=8), 4),
    Arch("reparametrized", Reparametrized, lambda g: (torch.randn(3, 4, generator=g),), 2, computed_weights=True),
    Arch("squeeze_excite", SqueezeExcite, img(h=6, w=6), 2),
    Arch("einsum_attention", EinsumAttention, seq(t=5, d=8), 3),
    Arch("volumetric", Volumetric, lambda g: (torch.randn(2, 2, 4, 4, 4, generator=g),), 2),
]


# ------------------------------------------------------------------------------------ issue 20 / 21 additions


class MaskedAttention(nn.Module):
    """Attention as transformers models write it: a padding mask broadcast over heads (sdpa), a causal
    mask built as a tensor (hand-written softmax), rotary embeddings (``rotate_half`` slicing each
    head in halves), and GPT-2's ``gelu_new`` in the MLP. (Grouped-query attention, ``kv_heads <
    heads``, is tested in test_trace_masks.py and, for parameter graphs, in test_graph_gqa.py.)"""

    def __init__(self, mode: str, heads: int = 4, kv_heads: int = 4, head_dim: int = 4, dim: int = 12):
        super().__init__()
        self.mode, self.h, self.kv, self.d = mode, heads, kv_heads, head_dim
        self.norm = nn.LayerNorm(dim)
        self.q, self.o = nn.Linear(dim, heads * head_dim), nn.Linear(heads * head_dim, dim)
        self.k, self.v = nn.Linear(dim, kv_heads * head_dim), nn.Linear(dim, kv_heads * head_dim)
        self.fc1, self.fc2, self.head = nn.Linear(dim, 20), nn.Linear(20, dim), nn.Linear(dim, 3)

    @staticmethod
    def rotate(x, pos):
        half = x.shape[-1] // 2
        freq = pos[:, None] / 10.0 ** (torch.arange(half, dtype=x.dtype) / half)
        cos, sin = torch.cat([freq.cos(), freq.cos()], -1), torch.cat([freq.sin(), freq.sin()], -1)
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

    def forward(self, x, pad):
        B, L, _ = x.shape
        h = self.norm(x)
        q = self.q(h).view(B, L, self.h, self.d).transpose(1, 2)
        k = self.k(h).view(B, L, self.kv, self.d).transpose(1, 2)
        v = self.v(h).view(B, L, self.kv, self.d).transpose(1, 2)
        if self.mode == "rotary":
            pos = torch.arange(L, dtype=x.dtype)
            q, k = self.rotate(q, pos), self.rotate(k, pos)
        if self.mode == "causal_eager":
            mask = torch.full((L, L), -1e4, dtype=x.dtype).triu(1)
            a = (q @ k.transpose(-2, -1) / math.sqrt(self.d) + mask).softmax(-1) @ v
        else:
            mask = torch.zeros(pad.shape, dtype=x.dtype).masked_fill(pad, -1e4)[:, None, None, :]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.kv != self.h)
        x = x + self.o(a.transpose(1, 2).reshape(B, L, self.h * self.d))
        u = self.fc1(x)
        u = 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * torch.pow(u, 3.0))))
        return self.head(self.fc2(u).mean(1))


def _padded(g):
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, -2:] = True
    return torch.randn(3, 5, 12, generator=g), pad


ARCHITECTURES += [
    Arch("masked_padding", lambda: MaskedAttention("padding"), _padded, None),
    Arch("masked_causal_eager", lambda: MaskedAttention("causal_eager"), _padded, None),
    Arch("rotary", lambda: MaskedAttention("rotary"), _padded, None),
]
