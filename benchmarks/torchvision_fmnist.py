"""Torchvision's mobilenet_v3_small and resnet18 on Fashion-MNIST at 32x32: trained, then compressed at delta = 1.

    python benchmarks/torchvision_fmnist.py train resnet18:4 mobilenet_v3_small:10
    python benchmarks/torchvision_fmnist.py compress resnet18 mobilenet_v3_small [--train-samples N] [--objective O]
        [--latency-runtime R --latency-batch B]

`train` fits each NAME:EPOCHS on all 54,000 training images (the engine's split; 6,000 carved
for validation) with the zoo's recipe (SGD, one-cycle, light augmentation), checkpoints after
every epoch (run the same command again after a kill), and saves the bare torchvision-layout
state dict (model.state_dict(), what a user would have) to
$KONDENSE_HOME/torchvision/NAME_fashion-mnist_32.pt; accuracy on all 10,000 test images and the
wall time go to benchmarks/results/torchvision-fmnist-train.json.

`compress` runs kondense.compress("torchvision:NAME", ...) on those weights at the same input size
with the zoo benchmark's budget (benchmarks/compress_zoo.py) and writes the six metrics of the
original, stage 1 and stage 2, the test drop, the wall time and the training samples to
benchmarks/results/torchvision-fmnist.json (with --objective latency or macs: torchvision-fmnist-OBJECTIVE.json,
and torchvision-fmnist-latency-ort.json where the latency table is timed in ONNX Runtime;
benchmarks/latency_objective.py compares the latency objective's models with the params objective's).

Why 32x32: torchvision's ImageNet stems halve the input five times (resnet18: stride-2 conv,
max-pool, three stride-2 stages; mobilenet_v3_small: five stride-2 blocks), so 32 is the
smallest size that still leaves a 1x1 map before the pooling and the classifier; 28x28 would
end at 1x1 through padding only. Larger sizes cost 4x per doubling on these 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

import kondense
from kondense import Budget, logs
from kondense import data as data_mod
from kondense.files import save_json, save_torch
from kondense.measure.profile import accuracy
from kondense.zoo import torchvision_models, weights
from kondense.zoo.training import train_model

HERE = Path(__file__).parent / "results"
TRAIN_RESULTS = HERE / "torchvision-fmnist-train.json"
RESULTS = HERE / "torchvision-fmnist.json"
SIZE = 32
# issue #12's targets: at least this many times fewer parameters at a test drop within delta
TARGETS = {"mobilenet_v3_small": 5.0, "resnet18": 20.0}


def build(name: str) -> nn.Module:
    """The torchvision model for one-channel 10-class input, in torchvision's own state-dict layout."""
    return torchvision_models.build(name, 10, 1)


def weights_path(name: str) -> Path:
    return weights.home() / "torchvision" / f"{name}_fashion-mnist_{SIZE}.pt"


def load_data(**subset: int | None) -> data_mod.DataBundle:
    return data_mod.load("fashion-mnist", input_size=(SIZE, SIZE), channels=1, **subset)


def train(name: str, epochs: int, lr: float = 0.1, batch_size: int = 128, seed: int = 0) -> dict:
    """The zoo's recipe (kondense.zoo.training.train_model) on a torchvision model; resumable per epoch."""
    bundle = load_data()
    path = weights_path(name)
    checkpoint = path.with_suffix(".ckpt")
    torch.manual_seed(seed)
    model = build(name).to(memory_format=torch.channels_last)
    fitted = train_model(
        model, bundle, epochs=epochs, checkpoint=checkpoint, batch_size=batch_size, lr=lr, seed=seed, name=name
    )
    history, elapsed = fitted.val_by_epoch, fitted.wall_seconds
    _, _, test_loader = bundle.loaders()
    # the bare state dict, contiguous (channels_last otherwise survives into the file)
    save_torch({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)
    checkpoint.unlink(missing_ok=True)
    return {
        "model": name,
        "dataset": "fashion-mnist",
        "inputSize": [SIZE, SIZE],
        "epochs": epochs,
        "peakLr": lr,
        "testAccuracy": round(accuracy(model, test_loader), 2),
        "testSamples": len(bundle.test),
        "valAccuracyByEpoch": history,
        "trainSamples": len(bundle.train),
        "trainWallSeconds": round(elapsed, 1),
        "weights": str(path),
        "params": sum(p.numel() for p in model.parameters()),
        "command": f"python benchmarks/torchvision_fmnist.py train {name}:{epochs}",
        "machine": machine(),
    }


def compress(name: str, args: argparse.Namespace) -> dict:
    began = time.time()
    # the command that reproduces this one model's entry: the flags, without the other models
    flags = [a for a in sys.argv[2:] if a not in args.models]
    result = kondense.compress(
        f"torchvision:{name}",
        "fashion-mnist",
        weights=str(weights_path(name)),
        input_size=(SIZE, SIZE),
        delta=args.delta,
        stage=2,
        out=Path(args.out) / name,
        device=args.device,
        objective=args.objective,
        latency_runtime=args.latency_runtime,
        latency_batch=args.latency_batch,
        budget=Budget(
            max_samples=args.max_samples,
            scan_samples=args.scan_samples,
            recal_samples=args.recal_samples,
            train_samples=args.train_samples,
        ),
    )
    r = result.report
    e = r["enhancement"]
    need = TARGETS.get(name)
    return {
        "command": " ".join(["python benchmarks/torchvision_fmnist.py compress", name, *flags]),
        "inputSize": [SIZE, SIZE],
        "delta": args.delta,
        "objective": args.objective,
        "latency": {"runtime": args.latency_runtime, "batch": args.latency_batch},
        "report": r,
        "wallSeconds": round(time.time() - began),
        "machine": machine(),
        "targets": {
            "testDropWithinDelta": e["accuracyDrop"] <= args.delta,
            "params": None
            if need is None
            else {"need": need, "got": round(e["params"], 2), "met": e["params"] >= need},
        },
    }


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def record(path: Path, name: str, entry: dict) -> None:
    """Merge one model's entry, read just before writing: the models may run in parallel processes."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[name] = entry
    save_json(results, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("specs", nargs="+", help="NAME:EPOCHS")
    t.add_argument("--lr", type=float, default=0.1)
    c = sub.add_parser("compress")
    c.add_argument("models", nargs="+")
    c.add_argument("--delta", type=float, default=1.0)
    c.add_argument("--device", default="auto")
    # the zoo benchmark's budget (benchmarks/compress_zoo.py), so the two tables compare
    c.add_argument("--max-samples", type=int, default=199_680)
    c.add_argument("--scan-samples", type=int, default=1000)
    c.add_argument("--recal-samples", type=int, default=256)
    c.add_argument("--train-samples", type=int)
    c.add_argument("--out", default="out/bench-torchvision")
    c.add_argument("--objective", default="params", choices=["params", "macs", "latency"])
    c.add_argument("--latency-runtime", default="torch", choices=["torch", "onnxruntime"])
    c.add_argument("--latency-batch", type=int, default=1)
    args = parser.parse_args()
    logs.setup()
    if args.command == "train":
        for spec in args.specs:
            name, _, epochs = spec.partition(":")
            began = time.time()
            entry = train(name, int(epochs or 5), lr=args.lr)
            entry["totalWallSeconds"] = round(time.time() - began, 1)
            record(TRAIN_RESULTS, name, entry)
            print(json.dumps({name: entry["testAccuracy"]}), file=sys.stderr)
    else:
        for name in args.models:
            entry = compress(name, args)
            results = RESULTS if args.objective == "params" else HERE / f"torchvision-fmnist-{args.objective}.json"
            if args.objective == "latency" and args.latency_runtime == "onnxruntime":
                results = HERE / "torchvision-fmnist-latency-ort.json"  # beside the torch table's runs, not over them
            record(results, name, entry)
            print(json.dumps({name: entry["targets"]}, indent=2), file=sys.stderr)


if __name__ == "__main__":
    main()
