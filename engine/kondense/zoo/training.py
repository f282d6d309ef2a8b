"""Train a zoo architecture on a data set and cache its weights, resuming after a kill."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kondense import data as data_mod
from kondense.device import resolve, resolve_precision
from kondense.errors import KondenseError
from kondense.files import save_torch
from kondense.measure.profile import accuracy
from kondense.train import recalibrate_batchnorm, train_epoch
from kondense.zoo import build, weights

logger = logging.getLogger(__name__)


# One-cycle peak learning rates. VGG-19 has no residual paths: at 0.1 its loss rose in the
# second of 3 epochs and it ended at 78.6% test accuracy on Fashion-MNIST; 0.05 trains it.
PEAK_LR = {"vgg19": 0.05}


@dataclass
class Fitted:
    val_accuracy: float
    wall_seconds: float  # training time over every run that contributed, resumed ones included
    val_by_epoch: list[float]


def train_model(
    model: torch.nn.Module,
    bundle: data_mod.DataBundle,
    *,
    epochs: int,
    checkpoint: Path,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    seed: int = 0,
    precision: str = "fp32",
    name: str = "model",
) -> Fitted:
    """Train `model` in place on `bundle`: SGD with a one-cycle schedule and light augmentation,
    checkpointed after every epoch to `checkpoint`, which a second call with the same epochs and data
    continues from instead of starting over. The caller removes it once the trained weights are saved."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps_per_epoch = (
        math.ceil(len(bundle.train) / batch_size)
        if len(bundle.train) <= batch_size
        else len(bundle.train) // batch_size
    )
    # one-cycle needs a few steps per phase; very short runs (tests) just stop early in the cycle
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(epochs * steps_per_epoch, 8), pct_start=0.25
    )
    start_epoch, elapsed, history = 0, 0.0, []
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=next(model.parameters()).device, weights_only=True)
        if state["epochs"] == epochs and state["train_samples"] == len(bundle.train):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, elapsed, history = state["epoch"], state["elapsed"], state.get("history", [])
            logger.info(f"resuming {name} from epoch {start_epoch}/{epochs} ({checkpoint})")
        else:
            logger.info(f"ignoring checkpoint {checkpoint}: it was made for other settings")
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        # reseeding per epoch makes the shuffle of epoch k the same whether or not the run resumed
        train_loader, val_loader, _ = bundle.loaders(batch_size=batch_size, seed=seed * 1000 + epoch)
        torch.manual_seed(seed * 1000 + epoch)
        loss = train_epoch(
            model,
            train_loader,
            optimizer,
            scheduler=scheduler,
            precision=precision,
            use_augment=True,
            description=f"{name} epoch {epoch + 1}/{epochs}",
        )
        recalibrate_batchnorm(model, train_loader)
        history.append(round(accuracy(model, val_loader), 2))
        elapsed += time.perf_counter() - began
        eta = elapsed / (epoch + 1 - start_epoch) * (epochs - epoch - 1)
        logger.info(
            f"{name} epoch {epoch + 1}/{epochs}: loss {loss:.4f}, val acc {history[-1]:.2f}%, "
            f"{elapsed:.0f}s so far, ETA {eta:.0f}s"
        )
        save_torch(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "epochs": epochs,
                "train_samples": len(bundle.train),
                "elapsed": elapsed,
                "history": history,
            },
            checkpoint,
        )
    val_acc = accuracy(model, bundle.loaders()[1])
    return Fitted(val_acc, elapsed, history)


@dataclass
class TrainResult:
    path: Path
    arch: str
    dataset: str
    epochs: int
    test_accuracy: float
    val_accuracy: float
    wall_seconds: float
    train_samples: int
    lr: float


def train_zoo(
    arch: str,
    dataset: str,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float | None = None,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    train_samples: int | None = None,
    val_samples: int | None = None,
    test_samples: int | None = None,
    data_root: str | None = None,
    out: Path | None = None,
) -> TrainResult:
    """SGD with a one-cycle schedule, light augmentation; checkpoints after every epoch.

    The checkpoint lives beside the final weights file; a second call with the same
    arguments continues from the last finished epoch instead of starting over.
    """
    lr = lr or PEAK_LR.get(arch, 0.1)
    if epochs < 1:
        raise KondenseError(f"epochs must be at least 1, got {epochs}")
    dev = resolve(device)
    prec = resolve_precision(precision, dev)
    bundle = data_mod.load(
        dataset,
        root=data_root,
        seed=seed,
        train_samples=train_samples,
        val_samples=val_samples,
        test_samples=test_samples,
    )
    in_channels = bundle.input_shape[0]
    dataset_key = dataset if dataset in data_mod.NAMED_DATASETS else bundle.name
    # weights trained on a subset are cached apart, so a quick run never replaces a full one
    subset = f"_subset{len(bundle.train)}" if train_samples else ""
    path = Path(out) if out else weights.cache_path(arch, dataset_key + subset, bundle.num_classes, in_channels)
    checkpoint = path.with_suffix(".ckpt")

    torch.manual_seed(seed)
    model = build(arch, bundle.num_classes, in_channels).to(dev).to(memory_format=torch.channels_last)
    logger.info(
        f"training {arch} on {dataset_key}: {len(bundle.train)} train / {len(bundle.val)} val samples, "
        f"{epochs} epochs, batch {batch_size}, {dev}, {prec}"
    )
    fitted = train_model(
        model,
        bundle,
        epochs=epochs,
        checkpoint=checkpoint,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        precision=prec,
        name=f"{arch} on {dataset_key}",
    )
    val_acc, elapsed = fitted.val_accuracy, fitted.wall_seconds

    _, _, test_loader = bundle.loaders()
    test_acc = accuracy(model, test_loader)
    meta = {
        "dataset": dataset_key,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "precision": prec,
        "device": str(dev),
        "train_samples": len(bundle.train),
        "val_samples": len(bundle.val),
        "val_accuracy": round(val_acc, 2),
        "test_accuracy": round(test_acc, 2),
        "test_samples": len(bundle.test),
        "wall_seconds": round(elapsed, 1),
        "torch": str(torch.__version__),
    }
    weights.save(path, model, arch, bundle.num_classes, in_channels, meta)
    checkpoint.unlink(missing_ok=True)
    logger.info(f"{arch}: test accuracy {test_acc:.2f}% ({len(bundle.test)} samples), saved {path}")
    return TrainResult(path, arch, dataset_key, epochs, test_acc, val_acc, elapsed, len(bundle.train), lr)
