"""objective latency against objective params: the two compressed models of one original, timed side by side.

    python benchmarks/latency_objective.py resnet18 mobilenet_v3_small \\
        --params out/bench-torchvision-b --latency out/bench-latency

For each NAME, PARAMS/NAME and LATENCY/NAME are finished runs of benchmarks/torchvision_fmnist.py
compress (the same original, data, delta and training-sample budget; only --objective differs).
Both compressed models, rebuilt from their model.pt, and the original are exported to ONNX and
timed in ONNX Runtime on this CPU at batch 1 and batch 32, in interleaved rounds so that a busy
spell of the machine falls on all three alike; the median of the rounds is kept. Also in torch.
Test accuracies come from each run's report (all 10,000 test images). Results go to
benchmarks/results/latency-objective.json (or --out) and a table is printed. The issue's target: the latency
objective's model at least 1.5x faster than the params objective's, at a test drop within delta.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

import kondense
from kondense import logs, onnx_export
from kondense.files import save_json
from kondense.measure.profile import latency_ms as torch_latency_ms
from kondense.zoo import torchvision_models

RESULTS = Path(__file__).parent / "results" / "latency-objective.json"
BATCHES = (1, 32)
ROUNDS = 5


def original_model(name: str) -> torch.nn.Module:
    from torchvision_fmnist import weights_path  # the benchmark that trained it

    model = torchvision_models.build(name, 10, 1)
    model.load_state_dict(torch.load(weights_path(name), map_location="cpu", weights_only=True))
    return model.eval()


def compare(name: str, params_run: Path, latency_run: Path, threads: int) -> dict:
    reports = {
        k: json.loads((run / "report.json").read_text())
        for k, run in (("params", params_run), ("latency", latency_run))
    }
    models = {
        "original": original_model(name),
        "params": kondense.load_compressed(params_run / "model.pt").eval(),
        "latency": kondense.load_compressed(latency_run / "model.pt").eval(),
    }
    channels, *size = torch.load(latency_run / "model.pt", weights_only=True)["input_shape"]
    example = torch.zeros(1, channels, *size)
    times: dict[str, dict[str, list[float]]] = {k: {} for k in models}
    with tempfile.TemporaryDirectory() as tmp:
        files = {k: Path(tmp) / f"{k}.onnx" for k in models}
        for k, m in models.items():
            onnx_export.export(files[k], m, example)
        for _ in range(ROUNDS):
            for k in models:
                for b in BATCHES:
                    times[k].setdefault(f"onnxruntime {b}", []).append(
                        onnx_export.latency_ms(files[k], example, threads, b)
                    )
                    times[k].setdefault(f"torch {b}", []).append(torch_latency_ms(models[k], example.shape[1:], b) * b)
    ms = {k: {where: statistics.median(v) for where, v in t.items()} for k, t in times.items()}
    drop = {k: r["enhancement"]["accuracyDrop"] for k, r in reports.items()}
    delta = reports["latency"]["delta"]
    return {
        "model": name,
        "delta": delta,
        "threads": threads,
        "msPerCall": ms,
        "latencyOverParams": {where: ms["params"][where] / ms["latency"][where] for where in ms["latency"]},
        "testAccuracy": {"original": reports["params"]["original"]["accuracy"]}
        | {k: r["stage2"]["accuracy"] for k, r in reports.items()},
        "testDrop": drop,
        "paramsX": {k: r["enhancement"]["params"] for k, r in reports.items()},
        "macsX": {k: r["enhancement"]["macs"] for k, r in reports.items()},
        "latencyTable": reports["latency"].get("latencyTable"),
        "trainingSamples": {k: r["trainingSamples"] for k, r in reports.items()},
        "target": {"need": 1.5, "withinDelta": drop["latency"] <= delta},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--params", type=Path, default=Path("out/bench-torchvision-b"))
    parser.add_argument("--latency", type=Path, default=Path("out/bench-latency"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"the results file (default {RESULTS})")
    args = parser.parse_args()
    logs.setup()
    torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.models:
        entry = compare(name, args.params / name, args.latency / name, args.threads)
        entry["machine"] = f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}"
        results[name] = entry
        save_json(results, args.out)
        print(f"\n{name} (delta {entry['delta']}, {args.threads} threads; ms per call, median of {ROUNDS} rounds)")
        print(f"{'':<22}{'original':>10}{'params':>10}{'latency':>10}{'params/latency':>16}")
        for where in entry["msPerCall"]["latency"]:
            row = [entry["msPerCall"][k][where] for k in ("original", "params", "latency")]
            print(f"{where:<22}" + "".join(f"{v:>10.3f}" for v in row) + f"{entry['latencyOverParams'][where]:>15.2f}x")
        acc, x = entry["testAccuracy"], entry["paramsX"]
        print(
            f"test accuracy: original {acc['original']:.2f}%, params {acc['params']:.2f}% ({x['params']:.1f}x params), "
            f"latency {acc['latency']:.2f}% ({x['latency']:.1f}x params)"
        )


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    main()
