"""The search's own work beside its forward passes: what a GPU leaves to the CPU in the scan.

    python benchmarks/search_overhead.py [--archs resnet18 vgg19 mobilenet_v2] [--repeats 3] [--device cpu|cuda]

For each zoo architecture (freshly initialised: the work measured does not depend on trained weights),
at the zoo benchmarks' scan ratios, on Fashion-MNIST's input shape:
- `estimatesSeconds`: one annealing step's estimates (kondense.pipeline.conductor.estimated at ratio
  0.7, on 64 samples), of which `momentsSeconds` is the gradient pass;
- `trialCopyMs`: building a scan trial (a copy of the model with one layer pruned or factorised), mean
  per transform over every candidate at every ratio (a factorisation's decomposition included);
- `scanSeconds`: every scan trial built and judged on 2 samples (BatchNorm re-estimated and evaluated),
  so that the forward passes cost little beside the rest, as on a GPU.
Median of `--repeats` runs; results go to benchmarks/results/search-overhead.json and are summarised in
docs/benchmarks.md ("Where the search's time goes").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from kondense import transforms, zoo
from kondense.pipeline import conductor, estimate
from kondense.transforms.lowrank import kept_decompositions

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "search-overhead.json"
RATIOS = (0.75, 0.5, 0.25, 0.125)  # the zoo benchmarks' (Budget's default)
INPUT = (1, 28, 28)


def _loader(samples: int, device: str) -> DataLoader:
    x = torch.randn(samples, *INPUT, device=device)
    y = torch.randint(0, 10, (samples,), device=device)
    return DataLoader(TensorDataset(x, y), batch_size=samples)


def _fresh_state() -> None:
    # a new model state, as after every annealing step: nothing traced or recorded before is reused
    transforms.pruning._PRUNERS.clear()
    transforms._common._CALLS.clear()


def _once(arch: str, device: str) -> dict:
    torch.manual_seed(0)
    model = zoo.build(arch, 10, INPUT[0]).to(device).eval()
    example = torch.zeros(2, *INPUT, device=device)
    recal = _loader(64, device)

    _fresh_state()
    began = time.perf_counter()
    conductor.estimated(model, recal, example, 0.7, "params", set(), 64)
    estimates = time.perf_counter() - began
    began = time.perf_counter()
    estimate.moments(model, recal, 64)
    moments = time.perf_counter() - began

    _fresh_state()
    tiny = _loader(2, device)
    judge = conductor.Judge(recal=tiny, scan=tiny, val=tiny, recal_samples=2)
    made = conductor._Trials(model, example, "params", set())
    copies: dict[str, list[float]] = {}
    began = time.perf_counter()
    with kept_decompositions():
        for layer, transform in made.candidates:
            for ratio in RATIOS:
                start = time.perf_counter()
                trial = made.make(layer, transform, ratio)[0]
                copies.setdefault(transform, []).append(time.perf_counter() - start)
                judge.scan_accuracy(trial)
    scan = time.perf_counter() - began
    return {
        "estimatesSeconds": estimates,
        "momentsSeconds": moments,
        "trialCopyMs": {t: 1000 * statistics.mean(v) for t, v in copies.items()},
        "scanSeconds": scan,
        "trials": sum(len(v) for v in copies.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "vgg19", "mobilenet_v2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = {}
    for arch in args.archs:
        runs = [_once(arch, args.device) for _ in range(args.repeats)]
        results[arch] = {
            "estimatesSeconds": round(statistics.median(r["estimatesSeconds"] for r in runs), 2),
            "momentsSeconds": round(statistics.median(r["momentsSeconds"] for r in runs), 2),
            "trialCopyMs": {
                t: round(statistics.median(r["trialCopyMs"][t] for r in runs), 1) for t in runs[0]["trialCopyMs"]
            },
            "scanSeconds": round(statistics.median(r["scanSeconds"] for r in runs), 2),
            "trials": runs[0]["trials"],
        }
        print(arch, json.dumps(results[arch]), flush=True)
    record = {
        "command": "python benchmarks/search_overhead.py",
        "arguments": {"archs": args.archs, "repeats": args.repeats, "device": args.device},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "device": args.device,
        "torch": torch.__version__,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
