"""One Conv2d/Linear layer shape as an ONNX graph of its own, ready to run in ONNX Runtime: what the
latency table times for runtime onnxruntime.

The graph is built directly with onnx.helper, not exported from torch: torch.onnx.export traces a
program through torch.export, seconds per shape, and a table holds tens to hundreds of shapes. It is
the node the exporter writes for the layer (Conv with the layer's kernel, stride, pads, dilation and
group; Gemm for a Linear on one feature vector per sample, MatMul then Add on more dimensions), with
random weights (speed does not depend on their values) and the input fixed at the table's batch, so
ONNX Runtime plans for exactly the shape it is timed at. tests/test_latency_table.py holds its time
close to that of the same layer exported by torch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kondense import onnx_export

if TYPE_CHECKING:
    from kondense.measure.layer_shape import LayerShape

OPSET = 18  # the torch exporter's; every operator used here is unchanged since long before it
_INPUT, _OUTPUT = "x", "y"


def graph(shape: LayerShape, batch: int) -> onnx.ModelProto:
    """The layer of `shape` alone, its input fixed at `batch` samples."""
    rng = np.random.default_rng(0)
    fan_in = shape.in_features * int(np.prod(shape.kernel or (1,))) // shape.groups

    def weights(name: str, dims: tuple[int, ...]) -> onnx.TensorProto:
        # scaled to fan-in, so outputs stay near unit size: no denormals to slow a kernel down
        values = rng.standard_normal(dims, dtype=np.float32) / np.float32(np.sqrt(fan_in))
        return numpy_helper.from_array(values, name)

    inputs = [_INPUT, "w"] + (["b"] if shape.bias else [])
    initializers = [weights("b", (shape.out_features,))] if shape.bias else []
    if shape.kind == "conv":
        kernel = (shape.out_features, shape.in_features // shape.groups, *shape.kernel)
        initializers.insert(0, weights("w", kernel))
        nodes = [
            helper.make_node(
                "Conv",
                inputs,
                [_OUTPUT],
                kernel_shape=list(shape.kernel),
                strides=list(shape.stride),
                pads=_pads(shape),
                dilations=list(shape.dilation),
                group=shape.groups,
            )
        ]
    elif len(shape.input) == 1:
        initializers.insert(0, weights("w", (shape.out_features, shape.in_features)))
        nodes = [helper.make_node("Gemm", inputs, [_OUTPUT], transB=1)]
    else:  # tokens x features: a matrix product over the last dimension, then the bias
        initializers.insert(0, weights("w", (shape.in_features, shape.out_features)))
        product = "xw" if shape.bias else _OUTPUT
        nodes = [helper.make_node("MatMul", [_INPUT, "w"], [product])]
        if shape.bias:
            nodes.append(helper.make_node("Add", [product, "b"], [_OUTPUT]))
    x = helper.make_tensor_value_info(_INPUT, TensorProto.FLOAT, [batch, *shape.input])
    y = helper.make_tensor_value_info(_OUTPUT, TensorProto.FLOAT, [None] * (1 + len(shape.input)))  # rank only
    model = helper.make_model(
        helper.make_graph(nodes, "layer", [x], [y], initializers), opset_imports=[helper.make_opsetid("", OPSET)]
    )
    onnx.checker.check_model(model)
    return model


def runner(shape: LayerShape, batch: int, threads: int) -> Callable[[], object]:
    """One inference of the layer's graph in an ONNX Runtime session with the job's session options
    (onnx_export.session), on a fixed random input."""
    with tempfile.TemporaryDirectory(prefix="kondense-layer-") as tmp:
        path = Path(tmp) / "layer.onnx"
        onnx.save(graph(shape, batch), str(path))
        session = onnx_export.session(path, threads)  # the session holds the model: the file may go
    feeds = {_INPUT: np.random.default_rng(1).standard_normal((batch, *shape.input), dtype=np.float32)}
    return lambda: session.run(None, feeds)


def _pads(shape: LayerShape) -> list[int]:
    """ONNX's [begins..., ends...] for torch's padding: symmetric pairs, or 'valid' / 'same' (torch puts
    the odd pixel of 'same' at the end, as it is here)."""
    if shape.padding == "valid":
        return [0] * 2 * len(shape.kernel)
    if shape.padding == "same":
        total = [d * (k - 1) for k, d in zip(shape.kernel, shape.dilation, strict=True)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    return [*shape.padding, *shape.padding]
