"""Small convolutional networks: VGG-style with BatchNorm, and the Small CNN Zoo architecture."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class VGG(nn.Module):
    """conv-BN-ReLU blocks with max pooling, flattened into a Linear classifier."""

    def __init__(self, channels: Sequence[int] = (16, 32), in_channels: int = 1, image_size: int = 8,
                 num_classes: int = 10, hidden: int = 32, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for i, w in enumerate(channels):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU())
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * size * size, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SmallCNN(nn.Module):
    """The Small CNN Zoo network (Unterthiner et al., 2020): three 3x3 convs of ``width`` channels
    (stride 2), global average pooling, a linear classifier."""

    def __init__(self, in_channels: int = 1, width: int = 16, num_classes: int = 10, activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), act(), nn.Dropout(dropout),
            nn.Conv2d(width, width, 3, stride=2, padding=1), act(), nn.Dropout(dropout),
            nn.Conv2d(width, width, 3, stride=2, padding=1), act())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))
