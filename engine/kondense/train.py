"""Training loops shared by the zoo and the compression stages."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from kondense.device import autocast, batch_to, in_mode
from kondense.progress import Progress

# loss_fn(logits, labels): training against the labels alone (distillation's takes the teacher's logits too)
SupervisedLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def augment(x: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Random shifts of up to `pad` pixels and random horizontal flips, per sample, on a batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,))
    dx = torch.randint(0, 2 * pad + 1, (n,))
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)
    out = padded[
        torch.arange(n, device=x.device).view(n, 1, 1, 1),
        torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1),
        rows.view(n, 1, h, 1),
        cols.view(n, 1, 1, w),
    ]
    flip = (torch.rand(n, device=x.device) < 0.5).view(n, 1, 1, 1)
    return torch.where(flip, out.flip(3), out)


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    loss_fn: SupervisedLoss = F.cross_entropy,
    precision: str = "fp32",
    use_augment: bool = False,
    description: str = "train",
) -> float:
    """One pass over `loader`; returns the mean loss. Shows a progress bar with ETA."""
    model.train()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    progress = Progress(len(loader), description)
    for x, y in loader:
        x, y = batch_to(x, device), y.to(device, non_blocking=True)
        if use_augment:
            x = batch_to(augment(x), device)
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(y)
        count += len(y)
        progress.update(loss=total / count)
    progress.close()
    return total / max(count, 1)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, samples: int = 1024) -> None:
    """Re-estimate every BatchNorm's running statistics from `samples` training samples.

    Running averages lag behind weights that moved fast (short schedules, or a layer just
    pruned or factorised), and eval-mode accuracy collapses although the weights are good;
    a fresh cumulative estimate fixes it.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    device = next(model.parameters()).device
    seen = 0
    try:
        with in_mode(model, training=True), torch.no_grad():  # statistics only: no autograd graph
            for x, _ in loader:
                model(batch_to(x, device))
                seen += len(x)
                if seen >= samples:
                    break
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
