"""CIFAR-style MobileNet v1 and v2 (stride-1 stems for 32x32 inputs)."""

from __future__ import annotations

import torch
from torch import nn

# (channels, stride) of the depthwise-separable blocks
_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
# (expansion, channels, repeats, first stride); stride 1 in the 2nd row, unlike ImageNet, for 32x32
_V2 = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _cbr(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: type[nn.Module] | None = nn.ReLU
) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu is not None:
        layers.append(relu(inplace=True))
    return layers


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers, c_in = _cbr(in_channels, 32, 3), 32
        for c_out, stride in _V1:
            layers += _cbr(c_in, c_in, 3, stride, groups=c_in) + _cbr(c_in, c_out, 1)
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers = [] if expansion == 1 else _cbr(c_in, hidden, 1, relu=nn.ReLU6)
        layers += _cbr(hidden, hidden, 3, stride, groups=hidden, relu=nn.ReLU6) + _cbr(hidden, c_out, 1, relu=None)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers, c_in = _cbr(in_channels, 32, 3, relu=nn.ReLU6), 32
        for expansion, c_out, repeats, stride in _V2:
            for i in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, expansion, stride if i == 0 else 1))
                c_in = c_out
        layers += _cbr(c_in, 1280, 1, relu=nn.ReLU6)
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def mobilenet_v1(num_classes: int = 10, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(num_classes, in_channels)


def mobilenet_v2(num_classes: int = 10, in_channels: int = 3) -> MobileNetV2:
    return MobileNetV2(num_classes, in_channels)
