"""report.json's "latency": the original and the final model timed where they would run, each figure
with its runtime, device, threads and batch.

The six-metric table's latencyMs is torch on the job's device at batch 32, per sample. A deployment
runs one input at a time or a batch, often in ONNX Runtime, and on a CPU or a GPU these rank models
differently (a compressed net can be faster at batch 1 and slower at 32). So both models are timed
at batch 1 and batch 32, and at the job's deployment batch (spec.latency.batch) where it is another,
in torch on the job's device and in ONNX Runtime on the CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from kondense import onnx_export
from kondense.errors import KondenseError
from kondense.measure.profile import latency_ms as torch_latency_ms

BATCHES = (1, 32)  # always timed: one input at a time, and a typical server batch


def batches(deployment_batch: int = 1) -> tuple[int, ...]:
    """BATCHES and the deployment's batch, sorted, each once."""
    return tuple(sorted({*BATCHES, deployment_batch}))


def latency_report(
    original: nn.Module, final: nn.Module, final_onnx: Path | None, example: torch.Tensor, deployment_batch: int = 1
) -> dict:
    """Milliseconds per call (not per sample) of both models at each of batches(deployment_batch)."""
    timed = batches(deployment_batch)
    threads = torch.get_num_threads()
    device = next(final.parameters()).device
    shape = tuple(example.shape[1:])
    report: dict = {
        "unit": "ms per call",
        "torch": {
            "runtime": f"torch {torch.__version__} eager",
            "device": str(device),
            "threads": threads,
            **{
                name: {str(b): torch_latency_ms(model, shape, batch_size=b) * b for b in timed}
                for name, model in (("original", original), ("final", final))
            },
        },
    }
    with tempfile.TemporaryDirectory(prefix="kondense-latency-") as tmp:
        original_onnx = Path(tmp) / "original.onnx"
        try:
            onnx_export.export(original_onnx, original, example)
        except KondenseError as e:
            original_onnx = None
            report["onnxruntimeNote"] = f"the original was not timed in ONNX Runtime: {e}"
        cpu_example = example.detach().cpu()
        report["onnxruntime"] = {
            "runtime": onnx_export.runtime(),
            "device": "cpu",
            "threads": threads,
            **{
                name: {str(b): onnx_export.latency_ms(path, cpu_example, threads, batch=b) for b in timed}
                for name, path in (("original", original_onnx), ("final", final_onnx))
                if path is not None
            },
        }
    return report


def speedups(report: dict) -> dict[str, float]:
    """original / final per runtime and batch, e.g. {'torch batch 1': 2.1, 'onnxruntime batch 32': 1.4}."""
    out = {}
    for runtime in ("torch", "onnxruntime"):
        part = report.get(runtime, {})
        if "original" in part and "final" in part:
            for b in part["final"]:
                out[f"{runtime} batch {b}"] = part["original"][b] / max(part["final"][b], 1e-9)
    return out
