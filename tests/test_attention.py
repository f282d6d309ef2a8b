"""Attention-head pruning: nn.MultiheadAttention unpacked into an equivalent Attention, whole heads removed
(the lightest ones), refusals with their reasons, and what annealing estimates a head costs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import vision_transformer

from kondense import transforms
from kondense.errors import KondenseError
from kondense.pipeline import estimate
from kondense.pipeline.artifacts import save_torchscript
from kondense.pipeline.conductor import Option, in_order
from kondense.pipeline.plan import Step, replay
from kondense.transforms import attention

OUT_PROJ = "encoder.layers.encoder_layer_{}.self_attention.out_proj"


def _vit(heads: int = 4) -> nn.Module:
    torch.manual_seed(0)
    model = vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=heads, hidden_dim=64, mlp_dim=128, num_classes=10
    ).eval()
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision starts it at zero: no gradient would reach inside
    return model


@pytest.mark.parametrize(
    "options",
    [
        dict(batch_first=True),
        dict(batch_first=False),
        dict(batch_first=True, bias=False),
        dict(batch_first=True, kdim=12, vdim=20),
    ],
)
@pytest.mark.parametrize(
    "call",
    [
        dict(need_weights=False),
        dict(need_weights=True),
        dict(need_weights=True, average_attn_weights=False),
        dict(need_weights=False, attn_mask=torch.ones(5, 7, dtype=torch.bool).triu(1)),
        dict(need_weights=False, attn_mask=torch.randn(5, 7)),
        dict(need_weights=False, key_padding_mask=torch.tensor([[False] * 6 + [True]] * 3)),
    ],
)
def test_unpacked_attention_computes_what_multihead_attention_does(options, call):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, **options).eval()
    unpacked = attention.unpacked(mha).eval()
    q = torch.randn(3, 5, 16)
    k, v = torch.randn(3, 7, options.get("kdim", 16)), torch.randn(3, 7, options.get("vdim", 16))
    if not options["batch_first"]:
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    expected, got = mha(q, k, v, **call), unpacked(q, k, v, **call)
    torch.testing.assert_close(got[0], expected[0])
    if call["need_weights"]:
        torch.testing.assert_close(got[1], expected[1])
    else:
        assert got[1] is None


def test_unpacked_attention_serves_a_transformer_encoder_layer_and_unbatched_input():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():  # in eval without gradients the layer would take its fused path if it could
        expected = layer(x, src_key_padding_mask=torch.tensor([[False] * 5 + [True]] * 2))
        unbatched = layer.self_attn(x[0], x[0], x[0])[0]
        layer.self_attn = attention.unpacked(layer.self_attn).eval()
        torch.testing.assert_close(layer(x, src_key_padding_mask=torch.tensor([[False] * 5 + [True]] * 2)), expected)
        torch.testing.assert_close(layer.self_attn(x[0], x[0], x[0])[0], unbatched)


def test_heads_keeps_the_heaviest_heads_and_rebuilds(tmp_path):
    model, x = _vit(), torch.randn(1, 3, 32, 32)
    name = OUT_PROJ.format(1)
    with torch.no_grad():  # head 2 of the second block reads nothing and writes nothing: the one to go
        model.get_submodule(name).weight[:, 32:48] = 0
        model.get_submodule(name.replace("out_proj", "")[:-1]).in_proj_weight[32:48] = 0
    assert transforms.candidates(model, name, example_input=x) == ["heads"]  # the packed attention blocks the width
    before = sum(p.numel() for p in model.parameters())
    steps = [Step(name, "heads", 0.75), Step(OUT_PROJ.format(0), "heads", 0.5)]
    replay(model, steps, x)

    pruned = model.get_submodule(name.rpartition(".")[0])
    assert isinstance(pruned, attention.Attention) and pruned.num_heads == 3
    assert attention.kept_heads(pruned, 1.0) == [0, 1, 2]
    assert model.get_submodule(OUT_PROJ.format(0)).in_features == 2 * 16
    # q, k, v lose 16 rows and out_proj 16 columns per head (biases too): 3 heads of 16 in all
    assert before - sum(p.numel() for p in model.parameters()) == 3 * (4 * 16 * 64 + 3 * 16)
    # the projections are plain layers now: low-rank reaches them, the output projection can lose more heads,
    # and with no packed attention left the model's width (what every block adds to) can be pruned
    assert transforms.candidates(model, name.replace("out_proj", "q_proj"), example_input=x) == ["lowrank"]
    assert transforms.candidates(model, name, example_input=x) == ["prune", "heads", "lowrank"]

    with torch.no_grad():
        y = model(x)
        fresh = replay(_vit(), steps, x)
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(fresh(x), y)
    scripted = torch.jit.load(str(save_torchscript(tmp_path / "model.ts", model, x)))
    torch.testing.assert_close(scripted(x), y)


def test_dropping_a_dead_head_is_free_and_a_live_one_is_not():
    model = _vit()
    name = OUT_PROJ.format(0)
    with torch.no_grad():
        model.get_submodule(name).weight[:, :16] = 0
    loader = [(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,)))]
    moments = estimate.moments(model, loader, 32)
    assert estimate.heads_harm(model, moments, name, 0.75) == 0.0  # the dead head goes
    assert estimate.heads_harm(model, moments, name, 0.25) > 0.0


def test_heads_are_refused_with_the_reason():
    x = torch.randn(1, 3, 32, 32)
    single = _vit(heads=1)
    with pytest.raises(KondenseError, match="single head"):
        transforms.apply(single, OUT_PROJ.format(0), "heads", 0.5, x)
    with pytest.raises(KondenseError, match="not the output projection of a multi-head attention"):
        transforms.apply(single, "encoder.layers.encoder_layer_0.mlp.0", "heads", 0.5, x)
    model = _vit()
    transforms.apply(model, OUT_PROJ.format(0), "heads", 0.5, x)
    transforms.apply(model, OUT_PROJ.format(0).replace("out_proj", "v_proj"), "lowrank", 0.5, x)
    assert "heads" not in transforms.candidates(model, OUT_PROJ.format(0), example_input=x)
    with pytest.raises(KondenseError, match="projections were factorised"):
        transforms.apply(model, OUT_PROJ.format(0), "heads", 0.5, x)
    biased = nn.Sequential(nn.Linear(8, 8))
    biased.attn = nn.MultiheadAttention(8, 2, add_bias_kv=True)
    assert "learned key/value biases" in attention.blocker(biased.attn)


def test_a_plan_prunes_channels_then_heads_then_factorises():
    options = [
        Option(OUT_PROJ.format(0), "lowrank", 0.5, 1.0, 1.0, []),
        Option(OUT_PROJ.format(1), "heads", 0.5, 1.0, 1.0, []),
        Option("encoder.layers.encoder_layer_1.mlp.0", "prune", 0.5, 1.0, 1.0, []),
    ]
    assert [s.transform for s in in_order(options, options)] == ["prune", "heads", "lowrank"]
