"""Fine-tuning throughput (samples/s) against the number of processes, for every backend.

    python benchmarks/throughput.py [--arch resnet18] [--samples 4096] [--processes 1 2] [--device cpu|cuda]

Each configuration runs the engine's distillation fine-tuning (kondense.pipeline.distill.FineTune)
for one epoch of `samples` samples through kondense.launch.worker, the path pods use; results
go to benchmarks/results/throughput.json and are summarised in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from kondense.launch.worker import launch_local

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "throughput.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["torch", "horovod", "mpi"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    for backend in args.backends:
        for n in args.processes:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "result.json"
                rank = [
                    sys.executable,
                    str(HERE / "throughput_rank.py"),
                    args.arch,
                    str(args.samples),
                    args.device,
                    str(out),
                ]
                code = launch_local(1, n, backend, rank)  # the ranks' logs go to stderr as they come
                if code != 0 or not out.exists():
                    raise SystemExit(f"{backend} x {n} failed (exit code {code}); its log is above")
                result = json.loads(out.read_text())
            rows.append({**result, "arch": args.arch})
            print(f"{backend:8s} {n} process(es): {result['samplesPerSecond']:.1f} samples/s", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
