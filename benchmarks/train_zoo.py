"""Train zoo models on Fashion-MNIST and record accuracy and wall time.

    python benchmarks/train_zoo.py resnet18:3 vgg19:3 mobilenet_v2:4

Each ARCH:EPOCHS is trained with `kondense zoo train` defaults (cached under
$KONDENSE_HOME, resumable); results are appended to benchmarks/results/zoo.json.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from kondense import logs
from kondense.zoo.training import train_zoo

RESULTS = Path(__file__).parent / "results" / "zoo.json"


def main(specs: list[str]) -> None:
    logs.setup()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        arch, _, epochs = spec.partition(":")
        began = time.time()
        r = train_zoo(arch, "fashion-mnist", epochs=int(epochs or 3))
        # read just before writing: several of these scripts may run side by side
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        results = [x for x in results if x["arch"] != arch]
        results.append(
            {
                "arch": arch,
                "dataset": "fashion-mnist",
                "epochs": r.epochs,
                "test_accuracy": round(r.test_accuracy, 2),
                "val_accuracy": round(r.val_accuracy, 2),
                "train_wall_seconds": round(r.wall_seconds, 1),
                "total_wall_seconds": round(time.time() - began, 1),
                "train_samples": r.train_samples,
                "command": f"kondense zoo train {arch} --dataset fashion-mnist --epochs {r.epochs}",
                "peak_lr": r.lr,
                "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            }
        )
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["resnet18:3", "vgg19:3", "mobilenet_v2:4"])
