"""The six metrics against hand-derived counts and the seed paper's reference table."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kondense import zoo
from kondense.measure import profile

# the seed paper's table: 100 classes, 3x32x32 inputs
REFERENCE = {
    "resnet18": (11.2201, 0.5567, 42.8014),
    "resnet50": (23.7053, 1.3049, 90.4284),
    "vgg19": (20.0867, 0.3995, 76.6246),
    "densenet121": (7.0485, 0.8982, 26.8881),
    "googlenet": (6.2585, 1.5341, 23.8743),
    "mobilenet_v1": (3.3095, 0.0473, 12.6246),
}


@pytest.mark.parametrize("arch", REFERENCE)
def test_zoo_matches_reference_table(arch: str) -> None:
    params, macs, size = REFERENCE[arch]
    model = zoo.build(arch, num_classes=100, in_channels=3)
    assert profile.params_m(model) == pytest.approx(params, rel=1e-3)
    assert profile.size_mb(model) == pytest.approx(size, rel=1e-3)
    assert profile.macs_g(model, (3, 32, 32)) == pytest.approx(macs, rel=0.02)


def tiny(inplace: bool = False) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 224 params
        nn.BatchNorm2d(8),  # 16 params
        nn.ReLU(inplace=inplace),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),  # 72 params
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),  # 645 params
    )


def test_hand_counted_params_size_macs() -> None:
    model = tiny()
    assert profile.params_m(model) * 1e6 == pytest.approx(957)
    assert profile.size_mb(model) == pytest.approx(957 * 4 / 2**20)
    conv = 3 * 3 * 3 * 8 * (8 * 8)  # k_h*k_w*C_in*C_out*H_out*W_out
    depthwise = 3 * 3 * 1 * 8 * (4 * 4)  # C_in/groups = 1
    linear = 128 * 5
    assert profile.macs_g(model, (3, 8, 8)) * 1e9 == pytest.approx(conv + depthwise + linear)


def test_frozen_parameters_are_not_counted() -> None:
    model = tiny()
    model[0].weight.requires_grad_(False)
    assert profile.params_m(model) * 1e6 == pytest.approx(957 - 216)


def test_hand_counted_memory() -> None:
    fp32 = 4
    inputs = 3 * 8 * 8 * fp32
    # conv, batch norm, relu outputs (8x8x8 each), depthwise output (8x4x4); flatten is a view; logits
    activations = 3 * 8 * 8 * 8 * fp32 + 8 * 4 * 4 * fp32 + 5 * fp32
    params = 957 * fp32
    assert profile.memory_mb(tiny(), (3, 8, 8)) * 2**20 == pytest.approx(inputs + activations + params)
    # an in-place ReLU writes into its input: one activation fewer
    assert profile.memory_mb(tiny(inplace=True), (3, 8, 8)) * 2**20 == pytest.approx(
        inputs + activations + params - 8 * 8 * 8 * fp32
    )


class Sleeper(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def test_latency_is_per_sample_median() -> None:
    # a forward pass of a batch of 20 takes 20 ms: 1 ms per sample
    latency = profile.latency_ms(Sleeper(0.020), (1, 2, 2), batch_size=20, warmup=1, runs=5)
    assert 0.95 <= latency < 1.5


def test_accuracy_top1_percent() -> None:
    x = torch.eye(4).repeat(25, 1)  # 100 one-hot rows
    y = x.argmax(dim=1)
    y[:10] = (y[:10] + 1) % 4  # 10 of 100 labels wrong
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    model = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(4))
    assert profile.accuracy(model, loader) == pytest.approx(90.0)


def test_profile_returns_all_six_keys() -> None:
    metrics = profile.profile(tiny(), (3, 8, 8))
    assert tuple(metrics.to_dict()) == tuple(m.key for m in profile.METRICS)
    assert metrics.accuracy is None
    assert all(v > 0 for k, v in metrics.to_dict().items() if k != "accuracy")


def test_profile_leaves_training_mode_alone() -> None:
    model = tiny().train()
    model[1].eval()  # a sub-module the caller froze on purpose (say, a BatchNorm) stays frozen
    profile.profile(model, (3, 8, 8))
    assert model.training and not model[1].training


def test_report_rows_and_enhancement_follow_the_metric_table() -> None:
    from kondense.measure import report

    before = profile.Metrics(**{m.key: 8.0 for m in profile.METRICS})
    after = profile.Metrics(**{m.key: 2.0 for m in profile.METRICS})
    enhancement = report.enhancement(before, after)
    assert list(enhancement) == [m.enhancement for m in profile.METRICS]
    assert enhancement["accuracyDrop"] == 6.0 and enhancement["params"] == 4.0  # a drop in points; a cost ratio
    header, rows = report._rows(report.build_report({"original": before, "stage1": after}))
    assert header == ["Metric", "Original", "Stage 1", "Enhance"]
    assert [r[0] for r in rows] == [m.label for m in profile.METRICS]
    assert rows[0][-1] == "-6.00" and rows[3][-1] == "4.00x"
