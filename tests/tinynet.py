"""A small, over-wide CNN trained for a few seconds: a realistic thing to compress in CI time."""

from __future__ import annotations

import torch
from torch import nn

from kondense import data
from kondense.train import recalibrate_batchnorm, train_epoch


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc1 = nn.Linear(64, 128)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(self.pool(self.features(x)))))


def small_data() -> data.DataBundle:
    # The test split only reports, and evaluating the tiny net is cheap: 2000 test images keep the
    # reported drop's noise (about 1.5 points on 600) below the engine's safety margin on validation.
    return data.load("fashion-mnist", train_samples=2000, val_samples=600, test_samples=2000)


def trained_tiny(bundle: data.DataBundle, epochs: int = 6) -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        train_epoch(model, bundle.loaders(batch_size=64, seed=epoch)[0], optimizer)
    recalibrate_batchnorm(model, bundle.loaders(batch_size=64)[0])
    return model.eval()
