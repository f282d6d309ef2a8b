"""INT8 post-training quantisation of model.onnx: kept only above the floor, with the reason where not."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from kondense import onnx_export, zoo
from kondense.errors import KondenseError
from kondense.job import spec
from kondense.pipeline import quantize


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = zoo.build("lenet5", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx_export.export(path, model, torch.randn(1, 1, 28, 28))
    data = TensorDataset(torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,)))
    return path, DataLoader(data, batch_size=32)


def _stage3(exported, tmp_path, floor):
    path, loader = exported
    return quantize.stage3(
        path,
        tmp_path / "model.int8.onnx",
        calibration=loader,
        val=loader,
        test=loader,
        example=torch.randn(1, 1, 28, 28),
        floor=floor,
        fp32_val=quantize.accuracy(path, loader, 1),
        samples=64,
    )


def test_int8_is_written_above_the_floor_and_smaller(exported, tmp_path):
    entry = _stage3(exported, tmp_path, floor=0.0)
    assert entry["file"] == "model.int8.onnx" and (tmp_path / "model.int8.onnx").exists()
    assert entry["calibrationSamples"] == 64 and entry["preparation"].endswith("(symbolic shape inference)")
    assert entry["sizeMB"] < entry["fp32SizeMB"] / 3  # lenet's weights are nearly all in its layers
    assert entry["valAccuracy"] == pytest.approx(quantize.accuracy(tmp_path / "model.int8.onnx", exported[1], 1))


def test_int8_below_the_floor_is_not_written_and_says_why(exported, tmp_path):
    entry = _stage3(exported, tmp_path, floor=101.0)
    assert entry["file"] is None and "below the floor 101.00%" in entry["error"]
    assert list(tmp_path.iterdir()) == []  # no model.int8.onnx, no temporary left


def test_recipes_are_tried_in_order_until_one_clears_the_floor(exported, tmp_path, monkeypatch):
    measured = iter([70.0, 10.0, 60.0])  # the float model; minmax misses the floor, percentile clears it

    def val_then_test(path, loader, threads):
        return next(measured, 55.0)

    monkeypatch.setattr(quantize, "accuracy", val_then_test)
    entry = _stage3(exported, tmp_path, floor=50.0)
    assert entry["attempts"] == [
        {"recipe": "minmax", "valAccuracy": 10.0},
        {"recipe": "percentile", "valAccuracy": 60.0},
    ]
    assert entry["file"] == "model.int8.onnx" and entry["recipe"] == "percentile" and entry["valAccuracy"] == 60.0
    assert entry["method"].endswith(quantize.RECIPES["percentile"])


def test_float_ends_keeps_the_first_and_last_layer_in_float(exported, tmp_path):
    import onnx

    path, loader = exported
    quantize.quantize_int8(path, tmp_path / "ends.onnx", loader, 64, recipe="float-ends")
    graph = onnx.load(str(tmp_path / "ends.onnx")).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    dequantised = [made_by.get(n.input[1]) == "DequantizeLinear" for n in weighted]
    assert dequantised[0] is False and dequantised[-1] is False, dequantised
    assert any(dequantised[1:-1]), dequantised  # the layers between stay INT8


def test_int8_survives_a_failing_symbolic_shape_inference(exported, tmp_path, monkeypatch):
    """ONNX Runtime's symbolic shape inference asserted on a graph torch 2.11 exported on a GPU machine
    (a Range it could not read); ONNX's own shape inference takes over, and the report says so."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    def refuse(*args, **kwargs):
        raise AssertionError

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(refuse))
    entry = _stage3(exported, tmp_path, floor=0.0)
    assert entry["file"] == "model.int8.onnx", entry
    assert "symbolic shape inference failed: AssertionError" in entry["preparation"]
    assert entry["sizeMB"] < entry["fp32SizeMB"] / 3


def test_a_model_onnx_runtime_cannot_read_is_reported(tmp_path):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(KondenseError, match="ONNX Runtime could not quantise the model"):
        quantize.quantize_int8(broken, tmp_path / "int8.onnx", DataLoader(TensorDataset(torch.zeros(2, 1))), 2)


def test_quantize_is_a_setting_the_crd_and_the_cli_share():
    assert spec.QUANTIZE == ("none", "int8") and "quantize" not in spec.DEFAULTS  # it follows the stage
    assert [spec.resolve_quantize(stage, None) for stage in (1, 2, 3)] == ["none", "none", "int8"]
    assert spec.resolve_quantize(2, "int8") == "int8"
    with pytest.raises(spec.SpecError, match="spec.quantize"):
        spec.check_settings(quantize="int4")
    with pytest.raises(spec.SpecError, match="spec.quantize: must be int8 or omitted at stage 3"):
        spec.check_settings(stage=3, quantize="none")
