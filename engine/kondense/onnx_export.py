"""model.onnx: the compressed model in ONNX, checked against PyTorch in ONNX Runtime before it is kept, and
timed there.

The export is torch's own (torch.onnx.export with the torch.export-based exporter, the one torch
maintains; the TorchScript-based one is deprecated), with a dynamic batch dimension. An export can
be wrong without failing (an operator translated with other semantics), so the file is only kept
once ONNX Runtime's logits on real inputs match the PyTorch model's: the largest logit difference
within a tolerance scaled to the logits. Top-1 agreement is reported beside it; a near tie may flip
within the tolerance, so it informs rather than decides.
"""

from __future__ import annotations

import copy
import logging
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kondense.errors import KondenseError
from kondense.files import atomic_write

logger = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "logits"
LATENCY_RUNS = 30
RELATIVE_TOLERANCE = 1e-4  # of the largest |logit|: float32 kernels that fuse or reorder differ by ~1e-6


@dataclass(frozen=True)
class Parity:
    samples: int
    maxAbsLogitDiff: float  # noqa: N815 - report.json's key
    tolerance: float
    top1Agreement: float  # noqa: N815 - percent
    passed: bool


def export(path: str | Path, model: nn.Module, example: torch.Tensor) -> int:
    """Write `model` (copied to the CPU, in eval mode) as ONNX with a dynamic batch dimension; returns the opset."""
    model = _cpu_eval(model)
    # two samples: torch.export specialises a dimension of size 1, which would fix the batch at 1
    example = example[:1].detach().cpu().float().repeat(2, *[1] * (example.dim() - 1)).contiguous()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - what torch.export or the translation refused is the reason
        raise KondenseError(f"torch could not export the model to ONNX: {_summary(e)}") from e
    atomic_write(path, lambda tmp: program.save(str(tmp)))
    return int(program.model.opset_imports.get("", 0))


def parity(path: str | Path, model: nn.Module, loader: DataLoader) -> Parity:
    """ONNX Runtime's logits against the PyTorch model's on every batch of `loader`."""
    run = session(path, torch.get_num_threads())
    model = _cpu_eval(model)
    samples, agree, worst, largest = 0, 0, 0.0, 0.0
    with torch.no_grad():
        for x, _ in loader:
            x = x.float().contiguous()
            expected = model(x).numpy()
            got = run.run([OUTPUT], {INPUT: x.numpy()})[0]
            worst = max(worst, float(np.abs(got - expected).max()))
            largest = max(largest, float(np.abs(expected).max()))
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
            samples += len(x)
    if samples == 0:
        raise KondenseError("the ONNX parity check needs at least one sample; the test split is empty")
    tolerance = RELATIVE_TOLERANCE * max(largest, 1.0)
    return Parity(samples, worst, tolerance, 100.0 * agree / samples, worst <= tolerance)


def session(path: str | Path, threads: int):
    """An ONNX Runtime session on the CPU with `threads` intra-op threads: every ONNX measurement's."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def save_onnx(path: str | Path, model: nn.Module, example: torch.Tensor, loader: DataLoader) -> dict:
    """Export, check parity and only then put model.onnx in place; report.json's "onnx" entry. A failed export
    or a failed check leaves no model.onnx and says why in the entry (the other outputs stand)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx.") as tmp:
        candidate = Path(tmp) / path.name
        try:
            opset = export(candidate, model, example)
            check = parity(candidate, model, loader)
        except KondenseError as e:
            logger.warning(f"model.onnx not written: {e}")
            return {"file": None, "error": str(e)}
        entry = {"file": None, "opset": opset, "dynamicBatch": True, "runtime": runtime(), "parity": asdict(check)}
        if not check.passed:
            entry["error"] = mismatch(check)
            logger.warning(f"model.onnx not written: {entry['error']}")
            return entry
        candidate.replace(path)
    entry["file"] = path.name
    logger.info(
        f"model.onnx: opset {opset}, max |logit difference| {check.maxAbsLogitDiff:.1e} on {check.samples} test "
        f"samples, top-1 agreement {check.top1Agreement:.2f}%"
    )
    return entry


def mismatch(check: Parity) -> str:
    return (
        f"the ONNX export does not compute what the PyTorch model does: logits differ by up to "
        f"{check.maxAbsLogitDiff:.3g} (tolerance {check.tolerance:.3g}) and top-1 agrees on "
        f"{check.top1Agreement:.2f}% of {check.samples} test samples; report it with the model's architecture"
    )


def _summary(error: Exception) -> str:
    """The line of an exporter error that says what went wrong, without its colour codes and advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines and lines.index("## Exception summary") + 1 < len(lines):
        return lines[lines.index("## Exception summary") + 1]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _cpu_eval(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode: the caller's model keeps its device, dtype and mode."""
    return copy.deepcopy(model).cpu().float().eval()


def runtime() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"


def latency_ms(
    path: str | Path, example: torch.Tensor, threads: int, batch: int = 1, runs: int = LATENCY_RUNS
) -> float:
    """Median wall time of one inference at `batch` in ONNX Runtime, after warm-up."""
    run = session(path, threads)
    x = {INPUT: example[:1].float().repeat(batch, *[1] * (example.dim() - 1)).numpy()}
    for _ in range(5):
        run.run([OUTPUT], x)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        run.run([OUTPUT], x)
        times.append(time.perf_counter() - began)
    return 1000.0 * statistics.median(times)
