"""CIFAR-style GoogLeNet (Inception v1): a 3x3 stem, nine inception blocks, no auxiliary heads."""

from __future__ import annotations

import torch
from torch import nn


def _cbr(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class Inception(nn.Module):
    def __init__(self, c_in: int, n1: int, n3_reduce: int, n3: int, n5_reduce: int, n5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(*_cbr(c_in, n1, 1))
        self.branch3 = nn.Sequential(*_cbr(c_in, n3_reduce, 1), *_cbr(n3_reduce, n3, 3))
        # the 5x5 branch as two stacked 3x3 convs, as the CIFAR variant does
        self.branch5 = nn.Sequential(*_cbr(c_in, n5_reduce, 1), *_cbr(n5_reduce, n5, 3), *_cbr(n5, n5, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), *_cbr(c_in, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(in_channels, 192, 3))
        self.features = nn.Sequential(
            Inception(192, 64, 96, 128, 16, 32, 32),
            Inception(256, 128, 128, 192, 32, 96, 64),
            nn.MaxPool2d(3, 2, 1),
            Inception(480, 192, 96, 208, 16, 48, 64),
            Inception(512, 160, 112, 224, 24, 64, 64),
            Inception(512, 128, 128, 256, 24, 64, 64),
            Inception(512, 112, 144, 288, 32, 64, 64),
            Inception(528, 256, 160, 320, 32, 128, 128),
            nn.MaxPool2d(3, 2, 1),
            Inception(832, 256, 160, 320, 32, 128, 128),
            Inception(832, 384, 192, 384, 48, 128, 128),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(self.stem(x))))


def googlenet(num_classes: int = 10, in_channels: int = 3) -> GoogLeNet:
    return GoogLeNet(num_classes, in_channels)
