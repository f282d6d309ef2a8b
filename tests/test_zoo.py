"""Zoo architectures and the weights files they are cached in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kondense import KondenseError, zoo
from kondense.zoo import weights


@pytest.mark.parametrize("arch", zoo.list_archs())
@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
def test_every_arch_runs_on_any_channels_and_classes(arch: str, in_channels: int, size: int) -> None:
    model = zoo.build(arch, num_classes=7, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)


def test_lenet5_has_the_classic_size() -> None:
    # LeCun et al.'s 61,706 parameters, plus 44 of the two BatchNorms
    assert sum(p.numel() for p in zoo.build("lenet5", 10, 1).parameters()) == 61_750


def test_resnet18_narrow_is_resnet18_at_a_quarter_width() -> None:
    """The demo's model: the same modules under the same names as resnet18, a quarter of the channels."""
    narrow, full = zoo.build("resnet18_narrow", 10, 1), zoo.build("resnet18", 10, 1)
    assert sum(p.numel() for p in narrow.parameters()) == 701_178
    shapes = {k: v.shape for k, v in full.state_dict().items()}
    assert set(narrow.state_dict()) == set(shapes)
    for name, w in narrow.state_dict().items():
        if w.dim() == 4:  # convolutions: out and in channels a quarter (the stem reads the one input channel)
            in_channels = 1 if name == "stem.0.weight" else shapes[name][1] // 4
            assert w.shape == (shapes[name][0] // 4, in_channels, *shapes[name][2:]), name
    assert narrow.fc.in_features == full.fc.in_features // 4


def test_unknown_arch_lists_the_known_ones() -> None:
    with pytest.raises(KondenseError) as e:
        zoo.build("resnet19")
    assert "resnet19" in str(e.value)
    for arch in zoo.list_archs():
        assert arch in str(e.value)


def test_weights_round_trip(tmp_path: Path) -> None:
    model = zoo.build("mobilenet_v1", 10, 1)
    path = tmp_path / "w.pt"
    weights.save(path, model, "mobilenet_v1", 10, 1, {"test_accuracy": 1.0})
    fresh = weights.load_into(zoo.build("mobilenet_v1", 10, 1), path, "mobilenet_v1", 10, 1)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert weights.read_meta(path)["test_accuracy"] == 1.0


def test_weights_for_another_model_say_which(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    weights.save(path, zoo.build("mobilenet_v1", 100, 3), "mobilenet_v1", 100, 3, {})
    with pytest.raises(KondenseError, match="mobilenet_v1 with 100 classes and 3 input channels"):
        weights.load_into(zoo.build("mobilenet_v1", 10, 3), path, "mobilenet_v1", 10, 3)


def test_bare_state_dict_is_checked_against_the_model(tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.save(zoo.build("mobilenet_v1", 100, 3).state_dict(), path)
    weights.load_into(zoo.build("mobilenet_v1", 100, 3), path, "mobilenet_v1", 100, 3)
    with pytest.raises(KondenseError, match=r"classifier.weight has shape \[100, 1024\], expected \[10, 1024\]"):
        weights.load_into(zoo.build("mobilenet_v1", 10, 3), path, "mobilenet_v1", 10, 3)
    with pytest.raises(KondenseError, match="another architecture"):
        weights.load_into(zoo.build("resnet18", 100, 3), path, "resnet18", 100, 3)


def test_pickled_model_is_refused_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "whole-model.pt"
    torch.save(zoo.build("mobilenet_v1", 10, 1), path)  # a whole module: loading it would run code
    with pytest.raises(KondenseError, match="code execution"):
        weights.read(path)


def test_not_a_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(KondenseError, match="not a PyTorch weights file"):
        weights.read(path)
