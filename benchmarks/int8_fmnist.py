"""INT8 on top of finished runs: model.onnx and model.int8.onnx of a compressed model, measured on Fashion-MNIST.

    python benchmarks/int8_fmnist.py out/bench-torchvision-b/resnet18 out/bench-torchvision-b/mobilenet_v3_small

Each argument is the output directory of a finished `kondense compress` run (here the torchvision
benchmark's, benchmarks/torchvision_fmnist.py) whose model.pt rebuilds alone. The model is
exported and checked as a run does (kondense.onnx_export), then quantised as
`--quantize int8` does (kondense.pipeline.quantize.stage3: calibrated on 512 training samples,
kept only if its validation accuracy stays above the run's floor), on the run's own splits.
Results go to benchmarks/results/int8-fmnist.json: accuracy (val, test), weight size and ONNX Runtime
latency at batch 1 and 32 of the float and INT8 files, beside the original's and stage 2's report.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import kondense
from kondense import Budget, logs, onnx_export
from kondense import data as data_mod
from kondense.files import save_json
from kondense.pipeline import quantize

RESULTS = Path(__file__).parent / "results" / "int8-fmnist.json"


def measure(run: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    model = kondense.load_compressed(run / "model.pt")
    channels, *size = torch.load(run / "model.pt", weights_only=True)["input_shape"]
    bundle = data_mod.load(
        "fashion-mnist", input_size=tuple(size), channels=channels, train_samples=report["data"]["train"]
    )
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == tuple(
        report["data"][k] for k in ("train", "val", "test")
    ), "the run's splits could not be rebuilt"
    example = torch.zeros(1, *bundle.input_shape)
    val, test = DataLoader(bundle.val, batch_size=256), DataLoader(bundle.test, batch_size=256)
    floor = report["validation"]["original"] - report["delta"] * (1 - Budget().safety)
    began = time.perf_counter()
    exported = onnx_export.save_onnx(run / "bench-model.onnx", model, example, test)
    if not exported["file"]:
        raise SystemExit(f"{run}: {exported['error']}")
    int8 = quantize.stage3(
        run / "bench-model.onnx",
        run / "bench-model.int8.onnx",
        calibration=DataLoader(bundle.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)),
        val=val,
        test=test,
        example=example,
        floor=floor,
        fp32_val=quantize.accuracy(run / "bench-model.onnx", val, torch.get_num_threads()),
    )
    threads = torch.get_num_threads()
    batch32 = {
        "fp32Ms": onnx_export.latency_ms(run / "bench-model.onnx", example, threads, batch=32),
        **(
            {"int8Ms": onnx_export.latency_ms(run / "bench-model.int8.onnx", example, threads, batch=32)}
            if int8["file"]
            else {}
        ),
    }
    return {
        "run": str(run),
        "model": run.name,
        "delta": report["delta"],
        "floor": floor,
        "original": report["original"],
        "stage2": report["stage2"],
        "onnx": exported,
        "int8": int8,
        "latencyBatch32": batch32,
        "sizeVsOriginal": report["original"]["sizeMB"] / int8["sizeMB"],
        "sizeVsStage2": report["stage2"]["sizeMB"] / int8["sizeMB"],
        "testDropVsOriginal": report["original"]["accuracy"] - int8["testAccuracy"],
        "seconds": round(time.perf_counter() - began, 1),
        "machine": f"{platform.processor() or platform.machine()}, {threads} threads",
        "command": "python benchmarks/int8_fmnist.py " + str(run),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    logs.setup()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for run in args.runs:
        entry = measure(run)
        results[run.name] = entry
        save_json(results, RESULTS)
        i = entry["int8"]
        print(
            f"{run.name}: {entry['sizeVsOriginal']:.0f}x below the original, {entry['sizeVsStage2']:.1f}x below stage 2; "
            f"test {i.get('testAccuracy', float('nan')):.2f}% (original {entry['original']['accuracy']:.2f}%); "
            f"{i.get('error', 'kept')}"
        )


if __name__ == "__main__":
    main()
