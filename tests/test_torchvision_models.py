"""torchvision's classification families through kondense: building them, and one pruning and one low-rank
step on every layer the transforms allow, with the forward pass, TorchScript and the replayed rebuild checked.

Where a family's smallest member is too slow for CI on 2 cores, the test builds the same torchvision class at
a small width or depth (named in CASES); the layer types, couplings and forward code are the family's own.
"""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import convnext, densenet, efficientnet, resnet, swin_transformer, vgg, vision_transformer

from kondense import transforms
from kondense.errors import KondenseError
from kondense.pipeline.artifacts import save_torchscript
from kondense.pipeline.plan import Plan, Step, replay
from kondense.zoo import torchvision_models as tvm


def _small_vgg() -> nn.Module:
    # VGG's classifier is fixed at 25088 -> 4096 -> 4096 (130M weights, minutes of SVD): the same class with
    # torchvision's own feature builder and a classifier of the same shape at a small width
    model = vgg.VGG(vgg.make_layers([16, "M", 32, "M", 64, 64, "M"], batch_norm=True), num_classes=10)
    model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    model.classifier = nn.Sequential(
        nn.Linear(64 * 4, 128), nn.ReLU(True), nn.Dropout(), nn.Linear(128, 128), nn.ReLU(True), nn.Dropout(),
        nn.Linear(128, 10),
    )  # fmt: skip
    return model


def _small_efficientnet_v2() -> nn.Module:
    # efficientnet_v2_s's stages (fused and plain MBConv, SE) with one block each instead of 2 to 15
    settings, last_channel = efficientnet._efficientnet_conf("efficientnet_v2_s")
    for stage in settings:
        stage.num_layers = 1
    return efficientnet.EfficientNet(settings, 0.2, last_channel=last_channel, num_classes=10)


def _build(name: str, in_channels: int = 3, **kwargs):
    return lambda: tvm.build(name, 10, in_channels, kwargs)


# family -> (builder, input size, input channels)
CASES = {
    "resnet18": (_build("resnet18", 1), 32, 1),
    # wide_resnet50_2 / resnext50_32x4d: their Bottleneck ResNet class with one block per stage
    "wide_resnet": (lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], width_per_group=128, num_classes=10), 32, 3),
    "resnext": (
        lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4, num_classes=10),
        32,
        3,
    ),
    "mobilenet_v2": (_build("mobilenet_v2"), 32, 3),
    "mobilenet_v3_small": (_build("mobilenet_v3_small", 1), 32, 1),
    "efficientnet_b0": (_build("efficientnet_b0"), 32, 3),
    "efficientnet_v2": (_small_efficientnet_v2, 32, 3),
    "regnet_x_400mf": (_build("regnet_x_400mf"), 32, 3),
    "regnet_y_400mf": (_build("regnet_y_400mf"), 32, 3),
    "shufflenet_v2_x0_5": (_build("shufflenet_v2_x0_5"), 32, 3),
    "mnasnet0_5": (_build("mnasnet0_5"), 32, 3),
    "squeezenet1_1": (_build("squeezenet1_1"), 32, 3),
    # densenet121: the DenseNet class with short dense blocks and a small growth rate
    "densenet": (lambda: densenet.DenseNet(8, (2, 2, 2, 2), 16, num_classes=10), 32, 3),
    "vgg_bn": (_small_vgg, 32, 3),
    "googlenet": (_build("googlenet"), 32, 3),
    "inception_v3": (_build("inception_v3"), 75, 3),
    # convnext_tiny, vit_b_16, swin_t: their classes at a small width and depth
    "convnext": (
        lambda: convnext.ConvNeXt(
            [convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)], num_classes=10
        ),
        32,
        3,
    ),
    "vit": (
        lambda: vision_transformer.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128, num_classes=10
        ),
        32,
        3,
    ),
    "swin": (
        lambda: swin_transformer.SwinTransformer([4, 4], 16, [1, 1], [1, 2], [4, 4], num_classes=10),
        32,
        3,
    ),
}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _transform_all(model: nn.Module, x: torch.Tensor, protected: set[str]) -> list[Step]:
    """'prune' 0.5 on every layer that allows it (asking again after each: pruning one group can leave
    another at one channel), 'heads' 0.5 on every attention, then 'lowrank' 0.5 on every layer that allows it.
    Attention is unpacked first, as stage 1 does, so that its projections and the model's width can be reached."""
    steps = [Step(name, "heads", 1.0) for name in transforms.packed_attention(model)]
    replay(model, steps, x)
    for kind in ("prune", "heads"):
        for name in transforms.optimizable_layers(model):
            if kind in transforms.candidates(model, name, protected, example_input=x):
                transforms.apply(model, name, kind, 0.5, x)
                steps.append(Step(name, kind, 0.5))
    layers = transforms.optimizable_layers(model)
    low = [n for n in layers if "lowrank" in transforms.candidates(model, n, protected, example_input=x)]
    for name in low:
        transforms.apply(model, name, "lowrank", 0.5, x)
        steps.append(Step(name, "lowrank", 0.5))
    return steps


@pytest.mark.parametrize("family", list(CASES))
def test_family_transforms(family, tmp_path):
    make, size, channels = CASES[family]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(1, channels, size, size)
    layers = transforms.optimizable_layers(model)
    protected = {layers[-1]}
    before = _params(model)
    steps = _transform_all(model, x, protected)

    pruned = {s.layer for s in steps if s.transform == "prune"}
    factorised = {s.layer for s in steps if s.transform == "lowrank"}
    assert pruned, f"{family}: no layer could be pruned"
    if family == "vit":  # its heads, and its width once the attention is unpacked
        assert {s.layer for s in steps if s.transform == "heads" and s.ratio < 1} == {
            f"encoder.layers.encoder_layer_{i}.self_attention.out_proj" for i in range(2)
        }
        assert model.hidden_dim < 64
    assert factorised, f"{family}: no layer could be factorised"
    assert _params(model) < before

    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 10)
    scripted = torch.jit.load(str(save_torchscript(tmp_path / "model.ts", model, x)))
    fresh = replay(make().eval(), steps, x)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), y)
        torch.testing.assert_close(fresh.eval()(x), y)


def test_attention_projections_are_not_factorised():
    # nn.MultiheadAttention reads out_proj.weight itself, Swin's attention reads qkv/proj weights: a Sequential
    # in their place would be ignored or break, so low-rank refuses them with the reason
    vit = CASES["vit"][0]().eval()
    x = torch.randn(1, 3, 32, 32)
    name = "encoder.layers.encoder_layer_0.self_attention.out_proj"
    assert "lowrank" not in transforms.candidates(vit, name, example_input=x)
    with pytest.raises(KondenseError, match="weight is read directly"):
        transforms.apply(vit, name, "lowrank", 0.5, x)
    assert transforms.candidates(vit, "encoder.layers.encoder_layer_0.mlp.0", example_input=x) == ["prune", "lowrank"]


def test_channel_shuffle_is_refused_with_reason():
    model = tvm.build("shufflenet_v2_x0_5", 10, 3).eval()
    x = torch.randn(1, 3, 32, 32)
    reasons = transforms.pruning.blockers(model, {"fc"}, x)
    # the branch's last 1x1 conv feeds the channel shuffle; its first 1x1 conv's channels stay inside the branch
    assert (
        "reshape that moves them" in reasons["stage2.1.branch2.5"] or "cannot follow" in reasons["stage2.1.branch2.5"]
    )
    assert reasons["stage2.1.branch2.0"] is None


def test_plan_lists_skipped_layers_with_reasons():
    model = tvm.build("mobilenet_v3_small", 10, 1).eval()
    x = torch.randn(1, 1, 32, 32)
    plan = Plan("params")
    plan.account(model, model, x)
    depthwise = plan.layers["features.1.block.0.0"]
    assert depthwise["skipped"].startswith("prune: it is a depthwise conv")
    assert "lowrank: it is a grouped/depthwise conv" in depthwise["skipped"]
    assert "skipped" not in plan.layers["features.1.block.2.0"]  # SE-free pointwise conv: prunable
    assert plan.layers["classifier.3"]["paramsBefore"] == 1024 * 10 + 10
    # the classifier is protected by default, yet it can be factorised: not skipped
    assert "skipped" not in plan.layers["classifier.3"]
    plan.account(model, model, x, protected={"features.1.block.2.0"})
    assert "skipped" not in plan.layers["features.1.block.2.0"]  # protected from pruning, still factorisable


def test_names_and_families_cover_torchvision_classifiers():
    assert set(tvm.names()) == set(torchvision.models.list_models(module=torchvision.models))
    assert "resnet18" in tvm.FAMILIES["resnet"] and "wide_resnet50_2" in tvm.FAMILIES["wide_resnet"]
    assert sorted(n for ns in tvm.FAMILIES.values() for n in ns) == tvm.names()


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KondenseError, match=r"unknown torchvision model 'resnet19'.*'resnet18'.*names\(\)"):
        tvm.build("resnet19", 10, 3)


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn", "deeplabv3_resnet50", "r3d_18", "quantized_resnet18"])
def test_non_classifiers_are_refused(name):
    with pytest.raises(KondenseError, match="not an image classifier"):
        tvm.build(name, 10, 3)


def test_published_weights_offline_names_the_network(tmp_path, monkeypatch):
    # an empty cache, so it must download; and no network, whether or not the machine running the test has one
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(KondenseError, match=r"resnet18 IMAGENET1K_V1.*state-dict file"):
        tvm.published_state_dict("resnet18", "IMAGENET1K_V1")
    with pytest.raises(KondenseError, match="no weights 'IMAGENET9'"):
        tvm.published_state_dict("resnet18", "IMAGENET9")


def test_one_channel_state_dict_in_torchvision_layout_loads():
    theirs = torchvision.models.resnet18(num_classes=10)
    theirs.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    ours = tvm.build("resnet18", 10, 1)
    ours.load_state_dict(theirs.state_dict())  # strict: same keys and shapes
    assert ours.conv1.stride == (2, 2) and ours.conv1.padding == (3, 3) and ours.conv1.kernel_size == (7, 7)
    with torch.no_grad():
        assert ours.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_stem_of_vit_takes_other_channel_counts_and_image_size():
    model = tvm.build("vit_b_16", 10, 1, {"image_size": 32})
    assert model.conv_proj.in_channels == 1 and model.conv_proj.kernel_size == (16, 16)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_googlenet_and_inception_have_one_output_while_training():
    model = tvm.build("googlenet", 10, 3)
    assert model.aux_logits is False
    assert model.train()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(KondenseError, match="aux_logits"):
        tvm.build("inception_v3", 10, 3, {"aux_logits": True})
