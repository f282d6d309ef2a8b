"""Fine-tuning throughput (samples/s) against the number of processes, for every backend.

    python benchmarks/throughput.py [--arch resnet18] [--samples 4096] [--processes 1 2] [--device cpu|cuda]
                                    [--backends torch horovod mpi] [--repeats 3]

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


def run_once(args: argparse.Namespace, backend: str, n: int) -> dict:
    """One epoch of fine-tuning on `n` processes of one worker, through the launcher pods use."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        rank = [sys.executable, str(HERE / "throughput_rank.py"), args.arch, str(args.samples), args.device, str(out)]
        code = launch_local(1, n, backend, rank)  # the ranks' logs go to stderr as they come
        if code != 0 or not out.exists():
            raise SystemExit(f"{backend} x {n} failed (exit code {code}); its log is above")
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["torch", "horovod", "mpi"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of every configuration, taken in turns; rows keep the median"
    )
    args = parser.parse_args()
    configs = [(backend, n) for backend in args.backends for n in args.processes]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    # in turns, not one configuration after another: a machine whose speed drifts (other tenants)
    # then slows every configuration alike, and the median of each shows less of it
    for repeat in range(args.repeats):
        for backend, n in configs:
            result = run_once(args, backend, n)
            runs[(backend, n)].append(result)
            print(
                f"[{repeat + 1}/{args.repeats}] {backend:8s} {n} process(es): {result['samplesPerSecond']:.1f} samples/s",
                flush=True,
            )
    rows = []
    for results in runs.values():
        middle = sorted(results, key=lambda r: r["samplesPerSecond"])[len(results) // 2]
        rows.append({**middle, "arch": args.arch, "runs": [round(r["samplesPerSecond"], 1) for r in results]})
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
