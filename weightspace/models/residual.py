"""A small CNN with one residual block (the graph demo's network)."""
from __future__ import annotations

import torch
import torch.nn as nn


class ResidualCNN(nn.Module):
    """conv-BN-ReLU stem, one BasicBlock-style residual block, global pooling, a linear head."""

    def __init__(self, in_channels: int = 1, width: int = 4, num_classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h))))))
        return self.head(h.mean(dim=(2, 3)))
