"""Measured latency per layer shape: what the latency objective minimises.

The conductor compares hundreds of candidates; timing each whole model would be slow and, on a
busy machine, noisy enough to reorder them. As NetAdapt and HALP do, each distinct Conv2d/Linear
shape (channels, kernel, stride, groups, input size) is timed once, alone, on the device the job
runs on, and a model's latency is the sum of its layers' entries. Two candidates that differ in one
layer then differ by exactly that layer's entries, so rankings are stable. What lies outside these
layers (activations, pooling, the attention's matrix products) is left out: pruning and
factorising change it little beside the layers themselves.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from kondense.device import in_mode

LATENCY_BATCH = 1  # the edge case kondense targets: one input at a time
_MIN_BLOCK_S = 2e-4  # time blocks of calls at least this long: one small layer call is below the timer's noise
_BLOCKS = 7


@dataclass(frozen=True)
class LayerShape:
    """Everything a Conv2d's or Linear's time depends on (not its weights' values)."""

    kind: str  # "conv" or "linear"
    in_features: int
    out_features: int
    input: tuple[int, ...]  # the input's shape without the batch dimension
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] | str = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True

    @classmethod
    def of(cls, layer: nn.Module, input_shape: tuple[int, ...]) -> LayerShape:
        bias = layer.bias is not None
        if isinstance(layer, nn.Conv2d):
            return cls(
                "conv",
                layer.in_channels,
                layer.out_channels,
                input_shape,
                tuple(layer.kernel_size),
                tuple(layer.stride),
                layer.padding if isinstance(layer.padding, str) else tuple(layer.padding),
                tuple(layer.dilation),
                layer.groups,
                bias,
            )
        return cls("linear", layer.in_features, layer.out_features, input_shape, bias=bias)

    def build(self) -> nn.Module:
        if self.kind == "conv":
            return nn.Conv2d(
                self.in_features,
                self.out_features,
                self.kernel,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
                self.bias,
            )
        return nn.Linear(self.in_features, self.out_features, self.bias)


class LatencyTable:
    """Milliseconds per layer shape at one batch size on one device, each measured once."""

    def __init__(self, device: torch.device, batch: int = LATENCY_BATCH) -> None:
        self.device, self.batch = torch.device(device), batch
        self.entries: dict[LayerShape, float] = {}
        self.seconds = 0.0  # spent measuring

    @torch.no_grad()
    def layer_ms(self, shape: LayerShape) -> float:
        if shape not in self.entries:
            began = time.perf_counter()
            self.entries[shape] = self._measure(shape)
            self.seconds += time.perf_counter() - began
        return self.entries[shape]

    def model_ms(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        """The sum of the entries of every Conv2d and Linear the model runs on one input of `input_shape`."""
        return sum(self.layer_ms(shape) for shape in layer_shapes(model, input_shape))

    def describe(self) -> dict:
        """What the table's numbers are, for report.json."""
        return {
            "runtime": f"torch {torch.__version__} eager",
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "batch": self.batch,
            "layerShapes": len(self.entries),
            "measureSeconds": round(self.seconds, 2),
        }

    def _measure(self, shape: LayerShape) -> float:
        layer = shape.build().to(self.device).eval()
        x = torch.randn(self.batch, *shape.input, device=self.device)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def block(calls: int) -> float:
            sync()
            began = time.perf_counter()
            for _ in range(calls):
                layer(x)
            sync()
            return time.perf_counter() - began

        block(3)  # warm-up: kernel selection, caches
        calls = max(1, int(_MIN_BLOCK_S / max(block(1), 1e-7)))
        return 1e3 * statistics.median(block(calls) / calls for _ in range(_BLOCKS))


@torch.no_grad()
def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerShape]:
    """The shape of every Conv2d/Linear call in one forward pass, in call order."""
    seen: list[LayerShape] = []

    def record(module: nn.Module, args: tuple) -> None:
        seen.append(LayerShape.of(module, tuple(args[0].shape[1:])))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ref = next(model.parameters())
    try:
        with in_mode(model, training=False):
            model(torch.zeros(1, *input_shape, device=ref.device, dtype=ref.dtype))
    finally:
        for h in hooks:
            h.remove()
    return seen


@lru_cache(maxsize=8)
def table(device: str, batch: int = LATENCY_BATCH) -> LatencyTable:
    """One table per device and batch for the whole process: entries are measured once per run."""
    return LatencyTable(torch.device(device), batch)


def table_for(model: nn.Module) -> LatencyTable:
    """The table of the device `model` is on, at LATENCY_BATCH: the one the latency objective reads."""
    ref = next(model.parameters(), None)
    return table(str(ref.device if ref is not None else torch.device("cpu")))


def latency_cost(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """The latency objective's cost: milliseconds at LATENCY_BATCH on the model's device, from the table."""
    return table_for(model).model_ms(model, input_shape)
