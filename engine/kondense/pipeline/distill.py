"""Fine-tuning with knowledge distillation from the original model (the teacher).

The teacher's logits on the training samples are computed once and cached: fine-tuning
runs many times (every stage, every annealing step) and the teacher never changes. Augmented
training data is the exception: each read is a new view, so the teacher runs on every batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from kondense.device import autocast, batch_to, resolve_precision
from kondense.distributed import Comm, SingleComm
from kondense.progress import Progress


class WithTeacher(Dataset):
    """(x, y, teacher_logits) for every sample of a data set. With `teacher` instead of cached
    `logits` (augmented training data: every read is another view of the image), the logits are
    left empty here and FineTune computes them batch by batch on the same view the student sees."""

    def __init__(self, base: Dataset, logits: torch.Tensor | None, teacher: nn.Module | None = None) -> None:
        if (logits is None) == (teacher is None):
            raise ValueError("give either the cached logits or the teacher")
        self.base, self.logits, self.teacher = base, logits, teacher

    def __len__(self) -> int:
        return len(self.base) if self.logits is None else len(self.logits)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, self._logits(i)

    def __getitems__(self, indices: list[int]) -> list:
        # a data set that reads a whole batch at once (kondense.data's) stays fast behind this wrapper
        read = getattr(self.base, "__getitems__", None)
        items = read(indices) if read is not None else [self.base[i] for i in indices]
        return [(x, y, self._logits(i)) for (x, y), i in zip(items, indices, strict=True)]

    def _logits(self, i: int) -> torch.Tensor:
        return _LIVE if self.logits is None else self.logits[i]


_LIVE = torch.empty(0)  # placeholder for logits computed during fine-tuning


@torch.no_grad()
def cache_teacher(teacher: nn.Module, train: Dataset, batch_size: int = 256, augmented: bool = False) -> WithTeacher:
    """The teacher's logits on every training sample, computed once; for `augmented` data the
    teacher itself, to run on each batch as it is drawn (a cached output would belong to another view)."""
    teacher.eval()
    if augmented:
        return WithTeacher(train, None, teacher)
    device = next(teacher.parameters()).device
    outs = []
    loader = DataLoader(train, batch_size=batch_size)
    with Progress(len(loader), "teacher logits") as progress:
        for x, _ in loader:
            outs.append(teacher(batch_to(x, device)).float().cpu())
            progress.update()
    return WithTeacher(train, torch.cat(outs))


@torch.no_grad()
def _teacher_logits(teacher: nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    with autocast(x.device, precision):
        return teacher(x).float()


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.7,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Hinton's distillation where the teacher knows better, the labels where it does not.

    Per sample: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy when the
    teacher's top-1 is the label and it gives the label more probability than the student does;
    plain cross-entropy otherwise. Distilling everywhere copies the teacher's mistakes and its
    doubts: an undertrained original (73% where its architecture reaches 92%) held its students at
    73%, where plain label training of the same pruned network reached 81%. So distillation repairs
    what compression broke, and the labels take over wherever the student has passed the teacher.
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="none",
        log_target=True,
    ).sum(dim=1)
    hard = F.cross_entropy(student_logits, labels, reduction="none")
    with torch.no_grad():
        # compared where the loss compares them, at temperature T
        teacher_p = F.softmax(teacher_logits.float() / t, dim=1).gather(1, labels[:, None]).squeeze(1)
        student_p = F.softmax(student_logits.float() / t, dim=1).gather(1, labels[:, None]).squeeze(1)
        knows_better = (teacher_logits.argmax(dim=1) == labels) & (teacher_p > student_p)
        trusted = alpha * knows_better.to(student_logits.dtype)
    return (trusted * t * t * soft + (1 - trusted) * hard).mean()


def warmup_cosine(total_steps: int, warmup: float) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear from 1/w up to 1 over the first w = warmup x total
    steps, then cosine decay to 0. (OneCycleLR divides by zero for the few steps a short fine-tune has.)"""
    w = math.ceil(warmup * total_steps)

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, total_steps - w)))

    return factor


OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
# loss_fn(student_logits, teacher_logits, labels): fine-tuning against the teacher (train.SupervisedLoss has no teacher)
DistillLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FineTune:
    """How to fine-tune after each change: batch size, learning rate, precision, and the user's
    optional optimizer and loss (the epochs are the Budget's).

    precision  'fp32', 'bf16' (autocast) or 'auto': bf16 where the device runs it natively
    optimizer  optimizer(params) -> torch.optim.Optimizer; default SGD with nesterov momentum,
               `warmup` of the steps rising linearly to `lr`, then cosine decay
    loss_fn    loss_fn(student_logits, teacher_logits, labels) -> loss; default kd_loss
    """

    batch_size: int = 128
    lr: float = 0.02
    weight_decay: float = 5e-4
    # A freshly compressed network without residual paths (VGG-19) diverged at the full rate from
    # the first step (loss 0.5 -> 4.1, validation 85% -> 79% after fine-tuning); a short warm-up holds it.
    warmup: float = 0.1
    precision: str = "auto"
    optimizer: OptimizerFactory | None = None
    loss_fn: DistillLoss | None = None

    def steps(self, samples: int, epochs: float) -> int:
        """Optimizer steps of a fine-tuning for `epochs` of `samples` samples (batches that are not full are dropped)."""
        batches = samples // self.batch_size if samples > self.batch_size else 1
        return max(1, math.ceil(epochs * batches))

    def samples(self, samples: int, epochs: float) -> int:
        """The training samples such a fine-tuning processes (on one rank)."""
        return self.steps(samples, epochs) * min(self.batch_size, samples)

    def run(
        self,
        model: nn.Module,
        data: WithTeacher,
        epochs: float,
        seed: int,
        description: str = "fine-tune",
        comm: Comm | None = None,
    ) -> int:
        """Fine-tune `model` in place for `epochs` (fractions allowed) of `data`, this rank's shard;
        gradients are averaged over ranks. Returns the samples processed by all ranks together."""
        comm = comm or SingleComm()
        device = next(model.parameters()).device
        precision = resolve_precision(self.precision, device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = comm.wrap_optimizer(
            self.optimizer(params)
            if self.optimizer
            else torch.optim.SGD(params, lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay),
            model,
        )
        loss_fn = self.loss_fn or kd_loss
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            data, batch_size=self.batch_size, shuffle=True, generator=generator, drop_last=len(data) > self.batch_size
        )
        # every rank must take the same number of steps, or the gradient collectives would not pair up
        total_steps = comm.broadcast_object(self.steps(len(data), epochs))
        scheduler = (
            torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, self.warmup))
            if self.optimizer is None
            else None
        )
        model.train()
        seen, step = 0, 0
        progress = Progress(total_steps, description, stage=True)  # a stage's work: its StageProgress counts it
        while step < total_steps:
            for x, y, teacher_logits in loader:
                x = batch_to(x, device)
                y, teacher_logits = y.to(device), teacher_logits.to(device)
                if data.teacher is not None:
                    teacher_logits = _teacher_logits(data.teacher, x, precision)
                with autocast(device, precision):
                    logits = model(x)
                loss = loss_fn(logits.float(), teacher_logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                seen += len(y)
                step += 1
                progress.update(loss=loss.item())
                if step >= total_steps:
                    break
        progress.close()
        comm.broadcast_module(model)  # identical already in exact arithmetic; this removes any drift
        return int(comm.allreduce_sum([seen])[0])
