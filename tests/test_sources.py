"""Model sources: torchvision architectures, a user's factory, and rebuilding what they compressed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from kondense.errors import KondenseError
from kondense.pipeline.artifacts import load_compressed, save_state
from kondense.pipeline.plan import Step, replay
from kondense.sources import ModelOptions, call_factory, kind, load_model
from kondense.zoo import torchvision_models

SHAPE = (1, 32, 32)

FACTORY_MODULE = """
from torch import nn


def build(width=8, num_classes=10):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


NOT_A_MODEL = 3


def not_a_module():
    return "a string"
"""


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    package = tmp_path / "src" / "usernets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "small.py").write_text(textwrap.dedent(FACTORY_MODULE))
    return tmp_path / "src"


def test_each_source_kind_is_recognised(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"")
    assert [kind(s) for s in ("zoo:resnet18", "torchvision:resnet18", "usernets.small:build")] == [
        "zoo",
        "torchvision",
        "factory",
    ]
    assert kind(str(tmp_path / "w.pt")) == "file"
    assert kind(nn.Linear(2, 2)) == "module"


def test_a_factory_is_imported_from_its_code_directory_with_its_arguments(code_dir: Path) -> None:
    model = call_factory("usernets.small:build", {"width": 4}, code_dir)
    assert model[0].out_channels == 4
    model, base, source = load_model(
        "usernets.small:build", ModelOptions(kwargs={"width": 4}, code_dir=str(code_dir)), "x", 10, SHAPE
    )
    assert base == {"factory": "usernets.small:build", "kwargs": {"width": 4}}
    assert source == "usernets.small:build"


@pytest.mark.parametrize(
    ("path", "kwargs", "words"),
    [
        ("usernets.small", {}, "must be package.module:function"),
        ("nosuchpackage.nets:build", {}, "cannot import module 'nosuchpackage.nets'"),
        ("usernets.small:missing", {}, "has no 'missing'"),
        ("usernets.small:NOT_A_MODEL", {}, "not a function"),
        ("usernets.small:not_a_module", {}, "returned a str, not a torch.nn.Module"),
        ("usernets.small:build", {"depth": 3}, "refused its keyword arguments ['depth']"),
    ],
)
def test_factory_mistakes_are_explained(code_dir: Path, path: str, kwargs: dict, words: str) -> None:
    with pytest.raises(KondenseError, match=None) as info:
        call_factory(path, kwargs, code_dir)
    assert words in str(info.value)


def test_a_missing_code_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(KondenseError, match="code directory .* does not exist"):
        call_factory("usernets.small:build", {}, tmp_path / "nowhere")


def test_torchvision_weights_in_torchvision_layout_load(tmp_path: Path) -> None:
    trained = torchvision_models.build("mobilenet_v3_small", 10, 1)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    model, base, source = load_model(
        "torchvision:mobilenet_v3_small", ModelOptions(weights=str(tmp_path / "w.pt")), "x", 10, SHAPE
    )
    assert base == {"torchvision": "mobilenet_v3_small", "num_classes": 10, "in_channels": 1, "kwargs": {}}
    assert source.startswith("torchvision:mobilenet_v3_small@")
    for ours, theirs in zip(model.state_dict().values(), trained.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    # weights trained for 10 classes do not fit 7, and the message says which tensor and why
    with pytest.raises(KondenseError, match=r"classifier.3.weight has shape \[10, 1024\], expected \[7, 1024\]"):
        load_model("torchvision:mobilenet_v3_small", ModelOptions(weights=str(tmp_path / "w.pt")), "x", 7, SHAPE)


def test_torchvision_needs_exactly_one_kind_of_weights(tmp_path: Path) -> None:
    with pytest.raises(KondenseError, match="needs its trained weights"):
        load_model("torchvision:resnet18", ModelOptions(), "x", 10, SHAPE)
    with pytest.raises(KondenseError, match="needs its trained weights"):
        load_model("torchvision:resnet18", ModelOptions(weights="w.pt", pretrained="DEFAULT"), "x", 10, SHAPE)


def test_published_weights_that_cannot_be_downloaded_name_the_network(tmp_path: Path, monkeypatch) -> None:
    # nothing listens on port 9: the download fails here whether or not the machine has internet access
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(KondenseError) as info:
        load_model("torchvision:resnet18", ModelOptions(pretrained="DEFAULT"), "x", 1000, (3, 32, 32))
    assert "resnet18" in str(info.value)


@pytest.mark.parametrize(
    ("source", "options", "words"),
    [
        ("zoo:resnet18", ModelOptions(weights="w.pt"), "weights cannot go with a zoo model"),
        ("torchvision:resnet18", ModelOptions(code_dir="src"), "code_dir cannot go with a torchvision model"),
        ("torchvision:resnet18", ModelOptions(arch="resnet18", weights="w.pt"), "arch cannot go with a torchvision"),
        ("usernets.small:build", ModelOptions(pretrained="DEFAULT"), "pretrained cannot go with a factory model"),
    ],
)
def test_options_a_source_would_ignore_are_refused(source: str, options: ModelOptions, words: str) -> None:
    with pytest.raises(KondenseError, match=words):
        load_model(source, options, "x", 10, SHAPE)


def _compressed(tmp_path: Path, original: nn.Module, base: dict) -> tuple[Path, nn.Module]:
    """A model.pt of `original` pruned at its first layer and factorised at its last-but-one."""
    example = torch.zeros(1, *SHAPE)
    layers = [n for n, m in original.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    steps = [Step(layers[0], "prune", 0.5), Step(layers[-2], "lowrank", 0.5)]
    model = replay(original, steps, example).eval()
    return save_state(tmp_path / "model.pt", model, steps, base=base, input_shape=SHAPE), model


def test_a_compressed_torchvision_model_rebuilds_alone(tmp_path: Path) -> None:
    original = torchvision_models.build("mobilenet_v3_small", 10, 1)
    base = {"torchvision": "mobilenet_v3_small", "num_classes": 10, "in_channels": 1, "kwargs": {}}
    path, model = _compressed(tmp_path, original, base)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(load_compressed(path)(x), model(x), atol=1e-5)


def test_a_compressed_factory_model_rebuilds_from_its_code_directory(tmp_path: Path, code_dir: Path) -> None:
    original = call_factory("usernets.small:build", {"width": 6}, code_dir)
    path, model = _compressed(tmp_path, original, {"factory": "usernets.small:build", "kwargs": {"width": 6}})
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(load_compressed(path, code_dir=code_dir)(x), model(x), atol=1e-5)


def test_a_googlenet_state_dict_saved_with_its_auxiliary_classifiers_loads(tmp_path: Path) -> None:
    import torchvision

    trained = torchvision.models.googlenet(num_classes=10, aux_logits=True, init_weights=True)
    torch.save(trained.state_dict(), tmp_path / "g.pt")
    assert any(k.startswith("aux1.") for k in trained.state_dict())
    model, _, _ = load_model(
        "torchvision:googlenet", ModelOptions(weights=str(tmp_path / "g.pt")), "x", 10, (3, 32, 32)
    )
    assert torch.equal(model.state_dict()["fc.weight"], trained.state_dict()["fc.weight"])


def test_a_second_code_directory_with_the_same_package_name_is_the_one_imported(tmp_path: Path) -> None:
    for width, where in ((3, "first"), (5, "second")):
        package = tmp_path / where / "samename"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "nets.py").write_text(f"from torch import nn\n\n\ndef build():\n    return nn.Linear(2, {width})\n")
    assert call_factory("samename.nets:build", {}, tmp_path / "first").out_features == 3
    assert call_factory("samename.nets:build", {}, tmp_path / "second").out_features == 5
