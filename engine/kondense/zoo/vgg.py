"""CIFAR-style VGG-19 with batch norm and a single linear classifier."""

from __future__ import annotations

import torch
from torch import nn

_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, config: list, num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for item in config:
            if item == "M":
                # ceil_mode keeps five poolings valid on 28x28 inputs (28->14->7->4->2->1);
                # on 32x32 it is identical to floor mode.
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                c_in = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def vgg19(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(_VGG19, num_classes, in_channels)
