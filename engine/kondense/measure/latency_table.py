"""Measured latency per layer shape: what the latency objective minimises.

The conductor compares hundreds of candidates; timing each whole model would be slow and, on a
busy machine, noisy enough to reorder them. As NetAdapt and HALP do, each distinct Conv2d/Linear
shape (channels, kernel, stride, groups, input size) is timed once, alone, where the model will be
deployed (spec.latency: torch eager on the job's device, or ONNX Runtime on the CPU, at the
deployment's batch), and a model's latency is the sum of its layers' entries. Two candidates that
differ in one layer then differ by exactly that layer's entries, so rankings are stable. What lies outside these
layers (activations, pooling, the attention's matrix products) is left out: pruning and
factorising change it little beside the layers themselves.

A table measured in one runtime and batch does not carry over to another: oneDNN in torch eager and
ONNX Runtime's kernels, or batch 1 and batch 32, rank layer shapes differently (a cut that saves
time in torch at batch 1 may save none in ONNX Runtime at 32), so the objective must be timed where
the model will run (docs/benchmarks.md, issue #15).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

from kondense import onnx_export
from kondense.device import in_mode
from kondense.errors import KondenseError
from kondense.job.spec import DEFAULT_LATENCY_BATCH, DEFAULT_LATENCY_RUNTIME, LATENCY_RUNTIMES
from kondense.measure import onnx_layer
from kondense.measure.layer_shape import LayerShape

_MIN_BLOCK_S = 2e-4  # time blocks of calls at least this long: one small layer call is below the timer's noise
_BLOCKS = 7


class LatencyTable:
    """Milliseconds per layer shape in one runtime, on one device, at one batch size, each measured once.
    ONNX Runtime runs on the CPU (CPUExecutionProvider) whatever the job's device: there its device is cpu."""

    def __init__(
        self, device: torch.device | str, batch: int = DEFAULT_LATENCY_BATCH, runtime: str = DEFAULT_LATENCY_RUNTIME
    ) -> None:
        if runtime not in LATENCY_RUNTIMES:
            raise KondenseError(f"latency runtime {runtime!r} is unknown; choose one of {', '.join(LATENCY_RUNTIMES)}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise KondenseError(f"latency batch must be a positive integer, got {batch!r}")
        self.runtime, self.batch = runtime, batch
        self.device = torch.device("cpu") if runtime == "onnxruntime" else torch.device(device)
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
            "runtime": f"torch {torch.__version__} eager" if self.runtime == "torch" else onnx_export.runtime(),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "batch": self.batch,
            "layerShapes": len(self.entries),
            "measureSeconds": round(self.seconds, 2),
        }

    def _measure(self, shape: LayerShape) -> float:
        if self.runtime == "onnxruntime":
            # the threads every ONNX measurement of the job uses (onnx_export.session, deployed_latency)
            return fastest_block_ms(onnx_layer.runner(shape, self.batch, torch.get_num_threads()))
        layer = shape.build().to(self.device).eval()
        x = torch.randn(self.batch, *shape.input, device=self.device)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        return fastest_block_ms(lambda: layer(x), sync)


def fastest_block_ms(call: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Milliseconds per `call`: the fastest of _BLOCKS blocks of calls, each block long enough to rise above the
    timer's noise, after a warm-up (kernel selection, caches). The fastest, not the median: a busy machine only
    ever adds time (a stalled thread, another process on the core), so the minimum is the closest to the
    layer's own cost, and a table measured beside other work still ranks shapes by their work. `sync` waits
    for queued device work."""

    def block(calls: int) -> float:
        if sync:
            sync()
        began = time.perf_counter()
        for _ in range(calls):
            call()
        if sync:
            sync()
        return time.perf_counter() - began

    block(3)
    calls = max(1, int(_MIN_BLOCK_S / max(block(1), 1e-7)))
    return 1e3 * min(block(calls) / calls for _ in range(_BLOCKS))


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


def table(
    runtime: str = DEFAULT_LATENCY_RUNTIME, device: str = "cpu", batch: int = DEFAULT_LATENCY_BATCH
) -> LatencyTable:
    """One table per (runtime, device, batch) for the whole process: entries are measured once per run
    (a resumed stage, or stage 2 after stage 1 in one process, reads the same table)."""
    return _table(runtime, "cpu" if runtime == "onnxruntime" else str(torch.device(device)), batch)


@lru_cache(maxsize=8)
def _table(runtime: str, device: str, batch: int) -> LatencyTable:
    return LatencyTable(device, batch, runtime)


def default_table(model: nn.Module) -> LatencyTable:
    """The table of a job that says nothing of its deployment (spec.latency's defaults): torch on the
    device `model` is on, at the default batch."""
    ref = next(model.parameters(), None)
    return table(DEFAULT_LATENCY_RUNTIME, str(ref.device if ref is not None else "cpu"), DEFAULT_LATENCY_BATCH)


def latency_cost(model: nn.Module, input_shape: tuple[int, ...], table: LatencyTable | None = None) -> float:
    """The latency objective's cost: milliseconds of `model`'s layers in `table` (None: default_table)."""
    return (table or default_table(model)).model_ms(model, input_shape)
