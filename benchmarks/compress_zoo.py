"""Compress the zoo's trained Fashion-MNIST models at delta = 1 and check the targets.

    python benchmarks/compress_zoo.py resnet18 vgg19 mobilenet_v2 [--train-samples N] [--device cuda]
    python benchmarks/compress_zoo.py resnet18 vgg19 mobilenet_v2 --latency-only

Needs the trained weights (benchmarks/train_zoo.py). Each run writes its outputs under
out/bench/ARCH (resumable: run the same command again after a kill) and its summary to
benchmarks/results/compress.json; docs/benchmarks.md summarises them. --latency-only times
the finished runs' models against their originals again (on an idle machine, when the runs
shared their cores) and replaces only `latencyCpu`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import kondense
from kondense import Budget, logs, zoo
from kondense.files import save_json
from kondense.measure.profile import latency_ms
from kondense.zoo import weights

RESULTS = Path(__file__).parent / "results" / "compress.json"
# (params x, MACs x) at least: the engine issue's MACs floor, the peers issue's (#17) parameter targets
TARGETS = {"resnet18": (80.0, 4.0), "vgg19": (100.0, None), "mobilenet_v2": (30.0, None)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("archs", nargs="+")
    parser.add_argument("--delta", type=float, default=1.0)
    parser.add_argument("--train-samples", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-steps", type=int, help="annealing steps at most (default: no cap)")
    # the training samples the first zoo runs processed (8 steps of 20,000): peers are compared at equal samples
    parser.add_argument("--max-samples", type=int, default=199_680)
    parser.add_argument("--scan-samples", type=int, default=1000)
    parser.add_argument("--recal-samples", type=int, default=256)
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--latency-only", action="store_true")
    args = parser.parse_args()
    logs.setup()
    if args.latency_only:
        for arch in args.archs:
            entry = json.loads(RESULTS.read_text())[arch]
            entry["latencyCpu"] = cpu_latency(arch, Path(args.out) / arch)
            record(arch, entry)
            print(json.dumps({arch: entry["latencyCpu"]}, indent=2), file=sys.stderr)
        return
    for arch in args.archs:
        began = time.time()
        out = Path(args.out) / arch
        result = kondense.compress(
            f"zoo:{arch}",
            "fashion-mnist",
            delta=args.delta,
            stage=2,
            out=out,
            device=args.device,
            budget=Budget(
                max_steps=args.max_steps,
                max_samples=args.max_samples,
                scan_samples=args.scan_samples,
                recal_samples=args.recal_samples,
                train_samples=args.train_samples,
            ),
        )
        r = result.report
        params_x, macs_x = TARGETS.get(arch, (None, None))
        e = r["enhancement"]
        entry = {
            "command": "python benchmarks/compress_zoo.py " + " ".join(sys.argv[1:]),
            "delta": args.delta,
            "report": r,
            "latencyCpu": cpu_latency(arch, out),
            "wallSeconds": round(time.time() - began),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "targets": {
                "testDropWithinDelta": e["accuracyDrop"] <= args.delta,
                "params": None
                if params_x is None
                else {"need": params_x, "got": round(e["params"], 2), "met": e["params"] >= params_x},
                "macs": None
                if macs_x is None
                else {"need": macs_x, "got": round(e["macs"], 2), "met": e["macs"] >= macs_x},
                "stage2OverStage1": {
                    "need": 2.0,
                    "got": round(r["stage1"]["paramsM"] / r["stage2"]["paramsM"], 2),
                    "met": r["stage1"]["paramsM"] / r["stage2"]["paramsM"] >= 2.0,
                },
            },
        }
        record(arch, entry)
        print(json.dumps({arch: entry["targets"]}, indent=2), file=sys.stderr)


def cpu_latency(arch: str, out: Path) -> dict:
    """The original and the compressed model timed back to back on the CPU, batch 1 and batch 32 (ms per sample)."""
    base = weights.load_into(
        zoo.build(arch, 10, 1), weights.cache_path(arch, "fashion-mnist", 10, 1), arch, 10, 1
    ).eval()
    small = kondense.load_compressed(out / "model.pt")
    return {
        "threads": torch.get_num_threads(),
        **{
            f"batch{b}": {
                "originalMs": latency_ms(base, (1, 28, 28), batch_size=b, runs=20),
                "compressedMs": latency_ms(small, (1, 28, 28), batch_size=b, runs=20),
            }
            for b in (1, 32)
        },
    }


def record(arch: str, entry: dict) -> None:
    """Merge one architecture's result into RESULTS, read just before writing so that runs of different
    architectures in parallel processes keep each other's entries; replaced atomically."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[arch] = entry
    save_json(results, RESULTS)


if __name__ == "__main__":
    main()
