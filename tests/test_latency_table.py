"""The latency objective's per-layer table: shapes recorded from a real forward pass, each timed once."""

from __future__ import annotations

import torch
from torch import nn

from kondense.measure import latency_table as lt
from kondense.pipeline.conductor import cost
from kondense.pipeline.plan import Step, applied

from .tinynet import TinyNet


def test_layer_shapes_follow_the_forward_pass() -> None:
    shapes = lt.layer_shapes(TinyNet(), (1, 28, 28))
    assert [(s.kind, s.in_features, s.out_features, s.input) for s in shapes] == [
        ("conv", 1, 32, (1, 28, 28)),
        ("conv", 32, 64, (32, 28, 28)),
        ("conv", 64, 64, (64, 14, 14)),
        ("linear", 64, 128, (64,)),
        ("linear", 128, 10, (128,)),
    ]
    assert shapes[1].stride == (2, 2) and shapes[1].kernel == (3, 3) and not shapes[1].bias


def test_each_shape_is_timed_once() -> None:
    table = lt.LatencyTable(torch.device("cpu"))
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, 4))
    first = table.model_ms(model, (16,))
    assert len(table.entries) == 2  # the two 16->16 layers share an entry
    spent = table.seconds
    assert table.model_ms(model, (16,)) == first and table.seconds == spent
    assert (
        first == 2 * table.entries[lt.LayerShape.of(model[0], (16,))] + table.entries[lt.LayerShape.of(model[3], (16,))]
    )


def test_a_layer_with_sixteen_times_the_work_costs_more() -> None:
    table = lt.LatencyTable(torch.device("cpu"))
    small = lt.LayerShape.of(nn.Conv2d(64, 16, 3, padding=1), (64, 56, 56))
    large = lt.LayerShape.of(nn.Conv2d(64, 256, 3, padding=1), (64, 56, 56))
    assert table.layer_ms(large) > 2 * table.layer_ms(small) > 0


def test_the_latency_objective_sees_a_pruning_and_a_factorisation() -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    # 112x112: enough work per layer that a quarter of a layer's channels is well above timing noise
    big = (1, 112, 112)
    before = cost(model, "latency", big)
    pruned = applied(model, [Step("features.3", "prune", 0.25)], torch.zeros(1, 1, 28, 28))
    assert cost(pruned, "latency", big) < before
    # a factorised layer is two layers in the table, each its own shape
    factorised = applied(model, [Step("fc1", "lowrank", 0.25)], torch.zeros(1, 1, 28, 28))
    assert len(lt.layer_shapes(factorised, (1, 28, 28))) == 6


def test_one_table_per_device_and_batch_says_what_it_measured() -> None:
    assert lt.table("cpu") is lt.table("cpu") and lt.table("cpu", 8) is not lt.table("cpu")
    lt.table("cpu").model_ms(TinyNet(), (1, 28, 28))
    described = lt.table("cpu").describe()
    assert described["device"] == "cpu" and described["batch"] == lt.LATENCY_BATCH
    assert described["threads"] == torch.get_num_threads() and described["layerShapes"] >= 5
    assert described["runtime"].startswith("torch ") and described["measureSeconds"] >= 0
