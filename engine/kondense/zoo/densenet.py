"""CIFAR-style DenseNet-121 (growth rate 32, compression 0.5, 3x3 stem)."""

from __future__ import annotations

import math

import torch
from torch import nn


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.body(x), x], dim=1)


def _transition(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), nn.Conv2d(c_in, c_out, 1, bias=False), nn.AvgPool2d(2)
    )


class DenseNet(nn.Module):
    def __init__(
        self, depths: list[int], growth: int, num_classes: int, in_channels: int, reduction: float = 0.5
    ) -> None:
        super().__init__()
        c = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
        for i, depth in enumerate(depths):
            for _ in range(depth):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i < len(depths) - 1:
                c_out = int(math.floor(c * reduction))
                layers.append(_transition(c, c_out))
                c = c_out
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def densenet121(num_classes: int = 10, in_channels: int = 3) -> DenseNet:
    return DenseNet([6, 12, 24, 16], 32, num_classes, in_channels)
