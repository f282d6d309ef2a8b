"""model.int8.onnx: INT8 post-training static quantisation of the compressed model, kept within the budget.

ONNX Runtime's quantize_static on the checked model.onnx: weights int8 per output channel, activations
uint8 with ranges calibrated on training samples, in QDQ form (what ONNX Runtime, TensorRT and mobile
runtimes read). Chosen over PyTorch's PT2E path because the result is the file that gets deployed:
its accuracy is measured in the runtime that will run it, not in a simulation of it. The quantised
model is kept only if its validation accuracy, like every other decision's, stays above the run's
floor; the test split is only reported.

Post-training quantisation comes first, always: RECIPES in turn, cheapest first. Only where none clears the
floor does a short quantisation-aware fine-tune (pipeline.qat) train a copy of the float model against a
simulation of this same scheme; its float weights are exported and the recipes run again on them, and the
result is judged as before. model.pt and model.onnx stay the float model; only model.int8.onnx comes from the
fine-tuned copy. Its samples count against the run's budget.max_samples (where it would pass the cap it is not
run, and the entry says so).

This is stage 3 (`stage=3`), which `quantize='int8'` also runs after stage 1 or 2. Where a stage 3 run keeps
its model, report.json's "stage3" holds its six metrics (stage3_metrics), beside the float stages' columns.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.utils.data import DataLoader

from kondense import onnx_export
from kondense.errors import KondenseError
from kondense.measure.profile import MB, Metrics, profile
from kondense.onnx_export import INPUT, OUTPUT, latency_ms, session
from kondense.pipeline import qat

logger = logging.getLogger(__name__)

CALIBRATION_SAMPLES = 512
# the batch at which every float column's latencyMs is a per-sample time (profile's default): stage 3's is
# measured the same way, so that the column compares runtimes and precisions, not batch sizes
PROFILE_BATCH = inspect.signature(profile).parameters["latency_batch"].default


# Tried in this order until one stays above the floor: post-training quantisation's usual remedies, cheapest
# first. Percentile ranges clip the rare outliers that stretch a MinMax range and starve the common values
# of levels; keeping the first and the last layer in float protects the two a thin net is most sensitive to
# (raw pixels in, logits out) at a small cost in size.
RECIPES = {
    "minmax": "activation ranges from their minimum and maximum",
    "percentile": "activation ranges from the 99.999th percentile",
    "float-ends": "minimum/maximum ranges, the first and the last layer kept in float",
}
QAT_PREFIX = "qat+"  # a recipe tried on the quantisation-aware fine-tuned weights: "qat+minmax"


def quantize_int8(
    source: str | Path, target: str | Path, calibration: DataLoader, samples: int, recipe: str = "minmax"
) -> str:
    """Write the INT8 form of the ONNX model `source` to `target`, calibrated on up to `samples` inputs, by
    one of RECIPES. Returns how the graph was prepared (see _prepare)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _inputs(calibration, samples)

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    target = Path(target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8.") as tmp:
        prepared, quantised = Path(tmp) / "prepared.onnx", Path(tmp) / target.name
        try:
            preparation = _prepare(source, prepared)
            quantize_static(
                str(prepared),
                str(quantised),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=CalibrationMethod.Percentile if recipe == "percentile" else CalibrationMethod.MinMax,
                nodes_to_exclude=_end_layers(prepared) if recipe == "float-ends" else None,
                extra_options={"CalibPercentile": 99.999} if recipe == "percentile" else None,
            )
        except Exception as e:  # noqa: BLE001 - what ONNX Runtime refused is the reason
            raise KondenseError(f"ONNX Runtime could not quantise the model: {type(e).__name__}: {e}") from e
        quantised.replace(target)
    return preparation


def _end_layers(path: Path) -> list[str]:
    """The names of the graph's first and last weighted node (Conv, Gemm or MatMul)."""
    weighted = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    return sorted({weighted[0], weighted[-1]}) if weighted else []


def _prepare(source: str | Path, prepared: Path) -> str:
    """Shape inference and graph clean-up, as ONNX Runtime advises before quantising. Its symbolic shape
    inference asserts on some exporters' graphs (seen on a GPU machine with torch 2.11 and onnxruntime
    1.30: a Range whose limit it could not read as a scalar); ONNX's own shape inference then does, since
    the shapes only place the quantisation nodes."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(source), str(prepared))
        return "onnxruntime pre-processing (symbolic shape inference)"
    except Exception as e:  # noqa: BLE001 - any failure of the optional inference has the same remedy
        reason = f"{type(e).__name__}: {e}".rstrip(": ")
    logger.info(f"INT8: ONNX Runtime's symbolic shape inference failed ({reason}); using ONNX's shape inference")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return f"onnxruntime pre-processing with ONNX shape inference (symbolic shape inference failed: {reason})"


def _inputs(loader: DataLoader, samples: int) -> Iterator[dict]:
    seen = 0
    for x, _ in loader:
        if seen >= samples:
            return
        x = x[: samples - seen].float().contiguous()
        seen += len(x)
        yield {INPUT: x.numpy()}


def accuracy(path: str | Path, loader: DataLoader, threads: int) -> float:
    """Top-1 accuracy in percent of the ONNX model at `path`, run in ONNX Runtime."""
    run, right, count = session(path, threads), 0, 0
    for x, y in loader:
        logits = run.run([OUTPUT], {INPUT: x.float().contiguous().numpy()})[0]
        right += int((logits.argmax(1) == y.numpy()).sum())
        count += len(y)
    return 100.0 * right / max(count, 1)


def weights_mb(path: str | Path) -> float:
    """MB (2^20 bytes, as every sizeMB of the report) of the model's stored constants: weights at their stored
    width (1 byte where quantised), with the scales, zero points and biases that quantisation stores."""
    model = onnx.load(str(path))
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer) / MB


def stage3_metrics(entry: dict, stage2: Metrics, model: nn.Module) -> Metrics:
    """The six metrics of the kept INT8 model (`entry`: stage3's report.json "int8" entry), where `stage2`
    are those of the float `model` it was quantised from.

    accuracy   its test accuracy in ONNX Runtime
    sizeMB     the stored constants of model.int8.onnx (weights_mb)
    macsG      the float model's: quantisation changes the width of each multiply-accumulate, not their number
    paramsM    the float model's, for the same reason
    memoryMB   the float model's with its parameters counted at their stored width in model.int8.onnx
               (input and activations as the float model's)
    latencyMs  ONNX Runtime on the CPU, per sample at PROFILE_BATCH (entry["latency"]["perSample"])
    """
    float_params = sum(p.numel() * p.element_size() for p in model.parameters()) / MB
    return Metrics(
        accuracy=entry["testAccuracy"],
        sizeMB=entry["sizeMB"],
        macsG=stage2.macsG,
        paramsM=stage2.paramsM,
        memoryMB=stage2.memoryMB - float_params + entry["sizeMB"],
        latencyMs=entry["latency"]["perSample"]["int8Ms"],
    )


def stage3(
    onnx_path: Path,
    target: Path,
    *,
    calibration: DataLoader,
    val: DataLoader,
    test: DataLoader,
    example: torch.Tensor,
    floor: float,
    fp32_val: float,
    samples: int = CALIBRATION_SAMPLES,
    retraining: qat.Retraining | None = None,
) -> dict:
    """Quantise model.onnx into `target` if its validation accuracy stays above `floor`; report.json's "int8"
    entry either way (with the reason where it was not kept). Where no recipe clears the floor and `retraining`
    is given, the recipes are tried again on a quantisation-aware fine-tuned copy of its model (pipeline.qat)."""
    threads = torch.get_num_threads()
    entry: dict = {
        "file": None,
        "method": "onnxruntime quantize_static, QDQ, int8 weights per channel, uint8 activations",
        "attempts": [],
    }
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".stage3.") as tmp:
        candidate = Path(tmp) / target.name

        def first_clearing(source: Path, prefix: str = "") -> tuple[str, float]:
            """The recipes in turn on `source` until one clears the floor: the last one tried, its val accuracy."""
            for recipe in RECIPES:
                entry["preparation"] = quantize_int8(source, candidate, calibration, samples, recipe)
                val_acc = accuracy(candidate, val, threads)
                entry["attempts"].append({"recipe": prefix + recipe, "valAccuracy": val_acc})
                if val_acc >= floor:
                    break
                logger.info(f"INT8 ({prefix}{RECIPES[recipe]}): val acc {val_acc:.2f}% is below the floor {floor:.2f}%")
            return prefix + recipe, val_acc

        try:
            recipe, val_acc = first_clearing(onnx_path)
            not_run = None
            if val_acc < floor:
                not_run = "no training data was given for it" if retraining is None else retraining.refusal()
                if not_run is None:
                    recipe, val_acc = _after_qat(
                        entry, retraining, Path(tmp), calibration, samples, example, first_clearing
                    )
        except KondenseError as e:
            logger.warning(f"model.int8.onnx not written: {e}")
            return entry | {"error": str(e)}
        entry["recipe"] = recipe
        entry["method"] += f"; {RECIPES[recipe.removeprefix(QAT_PREFIX)]}"
        if "qat" in entry:
            entry["method"] += (
                "; the INT8 weights are those of a quantisation-aware fine-tuned copy of the float model "
                "(model.pt and model.onnx stay the float model)"
            )
        entry |= {
            "calibrationSamples": min(samples, len(calibration.dataset)),  # type: ignore[arg-type]
            "valAccuracy": val_acc,
            "fp32ValAccuracy": fp32_val,
            "testAccuracy": accuracy(candidate, test, threads),
            "sizeMB": weights_mb(candidate),
            "fp32SizeMB": weights_mb(onnx_path),
            "latency": {
                "runtime": "onnxruntime (CPUExecutionProvider)",
                "threads": threads,
                "batch": 1,
                "int8Ms": latency_ms(candidate, example, threads),
                "fp32Ms": latency_ms(onnx_path, example, threads),
            },
        }
        if val_acc < floor:
            tried = ", ".join(f"{a['recipe']} {a['valAccuracy']:.2f}%" for a in entry["attempts"])
            qat_note = (
                "after quantisation-aware fine-tuning too"
                if not_run is None
                else f"quantisation-aware fine-tuning was not run ({not_run})"
            )
            entry["error"] = (
                f"the INT8 model's validation accuracy stays below the floor {floor:.2f}% with every recipe "
                f"({tried}; the float model's is {fp32_val:.2f}%), {qat_note}: kept the float model only"
            )
            logger.warning(f"model.int8.onnx not written: {entry['error']}")
            return entry
        candidate.replace(target)
    entry["file"] = target.name
    # stage3.latencyMs: measured like the float columns' (per sample at their batch), in the runtime that runs it
    entry["latency"]["perSample"] = {
        "batch": PROFILE_BATCH,
        "int8Ms": latency_ms(target, example, threads, batch=PROFILE_BATCH, runs=10) / PROFILE_BATCH,
    }
    logger.info(
        f"model.int8.onnx: {entry['fp32SizeMB'] / max(entry['sizeMB'], 1e-9):.1f}x smaller than model.onnx, val acc "
        f"{val_acc:.2f}% (float {fp32_val:.2f}%, floor {floor:.2f}%), {entry['latency']['int8Ms']:.2f} ms against "
        f"{entry['latency']['fp32Ms']:.2f} ms at batch 1"
    )
    return entry


def _after_qat(
    entry: dict,
    retraining: qat.Retraining,
    tmp: Path,
    calibration: DataLoader,
    samples: int,
    example: torch.Tensor,
    first_clearing: Callable[[Path, str], tuple[str, float]],
) -> tuple[str, float]:
    """The quantisation-aware fine-tune, then the recipes again on its float weights; entry["qat"] records it."""
    logger.info(
        f"INT8: no recipe clears the floor; quantisation-aware fine-tuning on {retraining.planned_samples():,} "
        "training samples"
    )
    try:
        outcome = qat.fine_tune(retraining, calibration, samples)
    except (RuntimeError, ValueError) as e:  # the run's outputs stand; stage 3 reports why it has no INT8 file
        raise KondenseError(f"quantisation-aware fine-tuning failed: {type(e).__name__}: {e}") from e
    entry["qat"] = {"samples": outcome.samples, "seconds": round(outcome.seconds, 2), "lr": outcome.lr}
    entry["qat"]["epochs"] = retraining.epochs
    source = tmp / "qat.onnx"
    onnx_export.export(source, outcome.model, example)
    tried = len(entry["attempts"])
    result = first_clearing(source, QAT_PREFIX)
    entry["qat"]["valAccuracy"] = {a["recipe"]: a["valAccuracy"] for a in entry["attempts"][tried:]}
    return result
