"""The interface every backend implements, and the one-process backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from kondense import device as devices
from kondense.distributed import SINGLE
from kondense.errors import KondenseError


def grad_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Every trainable parameter's gradient, in a fixed order. A parameter without one (unused in this
    rank's forward pass) gets zeros, so that all ranks reduce the same list (Horovod does the same)."""
    grads = []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    return grads


def state_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Parameters then buffers, in a fixed order; the tensors themselves (in-place updates reach the module)."""
    return [p.data for p in module.parameters()] + [b for b in module.buffers()]


def average_before_step(comm: Comm, optimizer: torch.optim.Optimizer, module: nn.Module) -> torch.optim.Optimizer:
    """The same optimizer object with a step pre-hook that averages the gradients first. It stays a real
    torch.optim.Optimizer, so LR schedulers, GradScaler and state_dict() keep working. Idempotent."""
    if getattr(optimizer, "_kondense_averaging", False):
        return optimizer

    def average_first(opt, args, kwargs):  # args: (optimizer, *step's positional arguments)
        if (len(args) > 1 and args[1] is not None) or kwargs.get("closure") is not None:
            raise KondenseError(
                "optimizer.step(closure) is not supported with distributed training: "
                "call backward() yourself, then step()"
            )
        comm.average_gradients(module)

    optimizer.register_step_pre_hook(average_first)
    optimizer._kondense_averaging = True  # type: ignore[attr-defined]
    return optimizer


class Comm(ABC):
    """What the engine needs from a group of processes. One instance per process."""

    backend: str = ""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def device(self, requested: str = "auto") -> torch.device:
        """This rank's device: cuda:local_rank (modulo the visible GPUs) when CUDA is used, else cpu."""
        dev = devices.resolve(requested)
        if dev.type == "cuda":
            if dev.index is None:
                dev = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(dev)
        return dev

    @abstractmethod
    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Root's picklable object, returned on every rank."""

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable object, in rank order, on every rank (small objects: one broadcast each)."""
        return [self.broadcast_object(obj if self.rank == r else None, root=r) for r in range(self.size)]

    @abstractmethod
    def broadcast_module(self, module: nn.Module, root: int = 0) -> None:
        """Overwrite every rank's parameters and buffers with root's, in place."""

    @abstractmethod
    def allreduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64 on the wire)."""

    @abstractmethod
    def average_gradients(self, module: nn.Module) -> None:
        """After backward(): every param.grad becomes its mean over ranks."""

    @abstractmethod
    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, module: nn.Module) -> torch.optim.Optimizer:
        """An optimizer whose step() first averages the gradients over ranks. Use it instead of the one
        passed in. Closures (LBFGS) are not supported."""

    def shard(self, dataset: Dataset, *, even: bool = False) -> Dataset:
        """This rank's part of `dataset`: indices rank, rank+size, ... (deterministic, no shuffling).
        The parts are disjoint and cover the data set (right for evaluation with allreduce_sum). With
        even=True every rank gets len // size items and the last len % size items are left out, so that
        training loops on all ranks run the same number of steps (collectives must match up)."""
        n = len(dataset)  # type: ignore[arg-type]
        stop = (n // self.size) * self.size if even else n
        return Subset(dataset, range(self.rank, stop, self.size))

    @abstractmethod
    def barrier(self) -> None:
        """Wait until every rank has got here."""

    @abstractmethod
    def shutdown(self) -> None:
        """Leave the group; the Comm cannot be used afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


class SingleComm(Comm):
    """One process: every collective is the identity."""

    backend = SINGLE

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def broadcast_module(self, module: nn.Module, root: int = 0) -> None:
        pass

    def allreduce_sum(self, values: list[float]) -> list[float]:
        return [float(v) for v in values]

    def average_gradients(self, module: nn.Module) -> None:
        pass

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, module: nn.Module) -> torch.optim.Optimizer:
        return optimizer

    def shard(self, dataset: Dataset, *, even: bool = False) -> Dataset:
        return dataset

    def barrier(self) -> None:
        pass

    def shutdown(self) -> None:
        pass
