"""A small Transformer encoder classifier (token embedding, learned positions, nn.TransformerEncoder)."""
from __future__ import annotations

import torch
import torch.nn as nn


class TinyTransformer(nn.Module):
    """Embeds tokens (``vocab_size`` > 0) or projects features (``in_features``), adds learned
    positional embeddings (a bare ``nn.Parameter``), runs ``depth`` pre- or post-norm encoder layers
    with multi-head attention, averages over tokens and classifies."""

    def __init__(self, vocab_size: int = 0, in_features: int = 16, seq_len: int = 8, dim: int = 32, heads: int = 4,
                 depth: int = 2, mlp_ratio: int = 2, num_classes: int = 10, norm_first: bool = True,
                 activation: str = "gelu"):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim) if vocab_size else nn.Linear(in_features, dim)
        self.pos = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout=0.0, activation=activation,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos
        h = self.norm(self.encoder(h))
        return self.head(h.mean(dim=1))
