"""model.onnx: torch's export with a dynamic batch, checked in ONNX Runtime against the PyTorch model,
kept only when it computes the same logits."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import torch
from torch.utils.data import DataLoader, TensorDataset

from kondense import onnx_export, zoo
from kondense.pipeline.plan import Step, replay


def _model_and_data():
    torch.manual_seed(0)
    model = zoo.build("mobilenet_v2", num_classes=10, in_channels=1).eval()
    with torch.no_grad():  # the zoo starts its classifier at zero: logits that nothing upstream could change
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    x = torch.randn(1, 1, 28, 28)
    replay(model, [Step("features.0", "prune", 0.5), Step("classifier", "lowrank", 0.5)], x)  # a compressed form
    data = TensorDataset(torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,)))
    return model, x, DataLoader(data, batch_size=16)


def test_the_export_takes_any_batch_and_matches_pytorch(tmp_path):
    model, x, loader = _model_and_data()
    opset = onnx_export.export(tmp_path / "model.onnx", model, x)
    assert opset >= 17
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = torch.randn(7, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": batch.numpy()})[0], model(batch).numpy(), atol=1e-4)
    check = onnx_export.parity(tmp_path / "model.onnx", model, loader)
    assert check.passed and check.samples == 40 and check.top1Agreement == 100.0
    assert check.maxAbsLogitDiff <= check.tolerance


def _broken(path, out):
    """The same graph with the weights of its last weighted operation shifted: a wrong export that still runs."""
    graph = onnx.load(str(path))
    weights = {i.name: i for i in graph.graph.initializer}
    last = [n for n in graph.graph.node if any(name in weights for name in n.input)][-1]
    weight = weights[next(name for name in last.input if name in weights)]
    values = onnx.numpy_helper.to_array(weight) + 0.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(graph, str(out))


def test_a_wrong_export_fails_the_parity_check(tmp_path):
    model, x, loader = _model_and_data()
    onnx_export.export(tmp_path / "model.onnx", model, x)
    _broken(tmp_path / "model.onnx", tmp_path / "broken.onnx")
    check = onnx_export.parity(tmp_path / "broken.onnx", model, loader)
    assert not check.passed and check.maxAbsLogitDiff > check.tolerance
    assert "does not compute what the PyTorch model does" in onnx_export.mismatch(check)


def test_save_onnx_keeps_no_file_that_failed_its_check(tmp_path, monkeypatch):
    model, x, loader = _model_and_data()
    entry = onnx_export.save_onnx(tmp_path / "model.onnx", model, x, loader)
    assert entry["file"] == "model.onnx", entry
    assert entry["parity"]["passed"] and (tmp_path / "model.onnx").exists()
    json.dumps(entry)  # goes into report.json as it is

    real_export = onnx_export.export

    def broken_export(path, model, example):
        opset = real_export(path, model, example)
        _broken(path, path)
        return opset

    monkeypatch.setattr(onnx_export, "export", broken_export)
    entry = onnx_export.save_onnx(tmp_path / "out" / "model.onnx", model, x, loader)
    assert entry["file"] is None and "does not compute what the PyTorch model does" in entry["error"]
    assert not entry["parity"]["passed"]
    assert list((tmp_path / "out").iterdir()) == []  # nothing left behind, not even a temporary file


def test_a_model_torch_cannot_export_is_reported_not_raised(tmp_path):
    class Opaque(torch.nn.Module):
        def forward(self, x):  # a branch on the data: torch.export cannot trace it
            return x.flatten(1)[:, :10] if x.sum() > 0 else -x.flatten(1)[:, :10]

    entry = onnx_export.save_onnx(
        tmp_path / "model.onnx",
        Opaque(),
        torch.randn(1, 1, 4, 4),
        DataLoader(TensorDataset(torch.randn(4, 1, 4, 4), torch.zeros(4))),
    )
    assert entry["file"] is None and entry["error"].startswith("torch could not export the model to ONNX")
    assert not (tmp_path / "model.onnx").exists()
