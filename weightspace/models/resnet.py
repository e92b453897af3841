"""ResNets: CIFAR-style ResNet-20 family and ImageNet-style ResNet-18 / Bottleneck variants."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers: Sequence[int], widths: Sequence[int], num_classes: int = 10,
                 in_channels: int = 3, stem: str = "cifar"):
        super().__init__()
        w0 = widths[0]
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        stages, cin = [], w0
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(block(cin, w, stride))
                cin = w * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def resnet20(num_classes: int = 10, width: int = 16, in_channels: int = 3) -> ResNet:
    """He et al.'s CIFAR ResNet-20: 3 stages of 3 BasicBlocks, widths w, 2w, 4w."""
    return ResNet(BasicBlock, [3, 3, 3], [width, 2 * width, 4 * width], num_classes, in_channels)


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ImageNet ResNet-18 (11.7M parameters)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, stem="imagenet")


def resnet_bottleneck(layers: Sequence[int] = (1, 1), width: int = 8, num_classes: int = 10,
                      in_channels: int = 3) -> ResNet:
    """A small ResNet of Bottleneck blocks (1x1 - 3x3 - 1x1, expansion 4)."""
    return ResNet(Bottleneck, layers, [width * 2 ** i for i in range(len(layers))], num_classes, in_channels)
