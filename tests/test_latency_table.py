"""The latency objective's per-layer table: shapes recorded from a real forward pass, each timed once."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from kondense import onnx_export
from kondense.errors import KondenseError
from kondense.measure import deployed_latency, onnx_layer
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


def test_one_table_per_runtime_device_and_batch_says_what_it_measured() -> None:
    default = lt.table("torch", "cpu", 1)
    assert lt.table() is default and lt.default_table(TinyNet()) is default, "spec.latency's defaults"
    assert lt.table("torch", "cpu", 8) is not default and lt.table("onnxruntime", "cpu", 1) is not default
    default.model_ms(TinyNet(), (1, 28, 28))
    described = default.describe()
    assert described["device"] == "cpu" and described["batch"] == 1
    assert described["threads"] == torch.get_num_threads() and described["layerShapes"] >= 5
    assert described["runtime"].startswith("torch ") and described["measureSeconds"] >= 0


def test_onnx_runtime_tables_run_on_the_cpu_whatever_the_device() -> None:
    ort = lt.table("onnxruntime", "cuda", 8)
    assert ort is lt.table("onnxruntime", "cpu", 8) and ort.device == torch.device("cpu")
    ort.model_ms(TinyNet(), (1, 28, 28))
    described = ort.describe()
    assert described["runtime"] == f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
    assert (described["device"], described["batch"]) == ("cpu", 8)
    # the table lives for the whole process: earlier runs at this batch may have filled it already
    shapes = set(lt.layer_shapes(TinyNet(), (1, 28, 28)))
    assert len(shapes) == 5 and shapes <= ort.entries.keys()
    assert described["layerShapes"] == len(ort.entries)
    assert described["threads"] == torch.get_num_threads()


def test_bad_runtime_or_batch_is_refused() -> None:
    with pytest.raises(KondenseError, match="torch, onnxruntime"):
        lt.LatencyTable("cpu", 1, "tensorrt")
    for batch in (0, 1.5, True):
        with pytest.raises(KondenseError, match="positive integer"):
            lt.LatencyTable("cpu", batch, "onnxruntime")


LAYERS = [
    (nn.Conv2d(8, 16, 3, padding=1), (8, 12, 12)),
    (nn.Conv2d(8, 16, 3, stride=2, padding=(0, 1), bias=False), (8, 13, 11)),
    (nn.Conv2d(16, 16, 3, padding=1, groups=16), (16, 10, 10)),  # depthwise
    (nn.Conv2d(8, 8, (3, 5), padding="same", dilation=(2, 1), groups=2), (8, 11, 12)),
    (nn.Conv2d(8, 4, 2, stride=2, padding="valid"), (8, 9, 9)),
    (nn.Linear(24, 10), (24,)),
    (nn.Linear(24, 10, bias=False), (24,)),
    (nn.Linear(24, 10), (7, 24)),  # tokens x features
    (nn.Linear(24, 10, bias=False), (7, 24)),
]


@pytest.mark.parametrize(("layer", "input_shape"), LAYERS, ids=[f"{layer}{shape}" for layer, shape in LAYERS])
def test_the_one_node_graph_computes_the_layer(layer: nn.Module, input_shape: tuple[int, ...]) -> None:
    """With the layer's own weights in place of the random ones, ONNX Runtime gives torch's output:
    the graph has the layer's kernel, stride, pads, dilation and groups, so it times the same work."""
    model = onnx_layer.graph(lt.LayerShape.of(layer, input_shape), batch=3)
    weight = layer.weight.detach().numpy()
    own = {"w": weight if isinstance(layer, nn.Conv2d) or len(input_shape) == 1 else weight.T}
    if layer.bias is not None:
        own["b"] = layer.bias.detach().numpy()
    assert {t.name for t in model.graph.initializer} == set(own)
    for t in model.graph.initializer:
        assert tuple(t.dims) == own[t.name].shape
        t.CopyFrom(numpy_helper.from_array(own[t.name].copy(), t.name))
    x = torch.randn(3, *input_shape)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {model.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, layer(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("layer", "input_shape"),
    [(nn.Conv2d(64, 64, 3, padding=1), (64, 28, 28)), (nn.Linear(512, 512), (16, 512))],
    ids=["conv", "linear"],
)
def test_a_one_node_graph_times_like_the_layer_exported_by_torch(
    tmp_path, layer: nn.Module, input_shape: tuple[int, ...]
) -> None:
    """The table's entry for a shape is what ONNX Runtime takes for that layer in a torch export: each
    timed in turn five times and the fastest kept, so that a busy machine slows both alike. One thread:
    a second one waits on whatever else holds a core, and the comparison is of the graphs, not of threads."""
    batch = 4
    path = tmp_path / "layer.onnx"
    onnx_export.export(path, nn.Sequential(layer).eval(), torch.zeros(2, *input_shape))
    exported = onnx_export.session(path, 1)
    x = {onnx_export.INPUT: np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)}
    mine = onnx_layer.runner(lt.LayerShape.of(layer, input_shape), batch, 1)
    times = {"export": [], "graph": []}
    for _ in range(5):
        times["export"].append(lt.fastest_block_ms(lambda: exported.run(None, x)))
        times["graph"].append(lt.fastest_block_ms(mine))
    ratio = min(times["graph"]) / min(times["export"])
    assert 0.6 < ratio < 1.6, times


def test_onnx_runtime_entries_grow_with_the_work_and_the_batch() -> None:
    table = lt.LatencyTable("cpu", 4, "onnxruntime")
    small = lt.LayerShape.of(nn.Conv2d(64, 16, 3, padding=1), (64, 28, 28))
    large = lt.LayerShape.of(nn.Conv2d(64, 256, 3, padding=1), (64, 28, 28))
    assert table.layer_ms(large) > 2 * table.layer_ms(small) > 0
    # sixteen times the batch: at least four times the time, however the threads share it
    assert lt.LatencyTable("cpu", 64, "onnxruntime").layer_ms(small) > 4 * table.layer_ms(small)


def test_the_latency_cost_reads_the_table_it_is_given() -> None:
    model = TinyNet().eval()
    ort = lt.LatencyTable("cpu", 2, "onnxruntime")
    ms = cost(model, "latency", (1, 28, 28), ort)
    assert ms == ort.model_ms(model, (1, 28, 28)) and len(ort.entries) == 5
    assert cost(model, "latency", (1, 28, 28)) == lt.default_table(model).model_ms(model, (1, 28, 28))


def test_report_batches_add_the_deployment_batch() -> None:
    assert deployed_latency.batches() == deployed_latency.batches(32) == (1, 32)
    assert deployed_latency.batches(8) == (1, 8, 32) and deployed_latency.batches(64) == (1, 32, 64)
