"""Horovod (horovod.torch) over Gloo. Horovod is imported here only, when this backend is chosen."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from kondense.distributed import timeout
from kondense.distributed.base import Comm, average_before_step, grad_tensors, state_tensors
from kondense.errors import KondenseError


def import_horovod():
    try:
        import horovod.torch as hvd
    except ImportError as e:
        raise KondenseError(
            f"the horovod backend needs Horovod, which does not import here ({e}); "
            f"build and install it with scripts/build-horovod.sh, or use --backend torch"
        ) from None
    return hvd


class HorovodComm(Comm):
    backend = "horovod"

    def __init__(self, device: str = "auto") -> None:
        if not os.environ.get("HOROVOD_RANK") or not os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"):
            size = os.environ.get("HOROVOD_SIZE", "1")
            if size != "1":
                raise KondenseError(
                    "HOROVOD_RANK or HOROVOD_GLOO_RENDEZVOUS_ADDR is not set: start Horovod "
                    "ranks with `kondense worker` (or kondense.launch.worker), which sets them"
                )
        # Horovod reads its Gloo timeout (rendezvous and collectives) from the environment at init().
        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(max(1, int(timeout().total_seconds()))))
        self._hvd = hvd = import_horovod()
        hvd.init()
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
        self._device = self.device(device)
        # A wheel built without NCCL (scripts/build-horovod.sh's) has no GPU collectives: GPU tensors
        # then travel through host memory over Gloo.
        self._via_host = self._device.type == "cuda" and not hvd.nccl_built()

    def _inplace(self, start, tensors: list[torch.Tensor], name: str) -> None:
        """Run an in-place Horovod op on each tensor (all in flight at once), through host memory if needed."""
        hvd = self._hvd
        # Horovod wants contiguous tensors; channels-last conv weights (and their gradients) are not
        wire = [t.cpu().contiguous() if self._via_host else t.contiguous() for t in tensors]
        handles = [start(t, f"{name}.{i}") for i, t in enumerate(wire)]
        for h in handles:
            hvd.synchronize(h)
        for t, w in zip(tensors, wire, strict=True):
            if w is not t:
                t.copy_(w)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self._hvd.broadcast_object(obj, root_rank=root, name="kondense.object")

    def broadcast_module(self, module: nn.Module, root: int = 0) -> None:
        hvd = self._hvd
        with torch.no_grad():
            self._inplace(
                lambda t, name: hvd.broadcast_async_(t, root_rank=root, name=name),
                state_tensors(module),
                "kondense.state",
            )

    def allreduce_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        return self._hvd.allreduce(t, op=self._hvd.Sum, name="kondense.sum").tolist()

    def average_gradients(self, module: nn.Module) -> None:
        if self.size == 1:
            return
        hvd = self._hvd
        with torch.no_grad():
            self._inplace(
                lambda t, name: hvd.allreduce_async_(t, op=hvd.Average, name=name),
                grad_tensors(module),
                "kondense.grad",
            )

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, module: nn.Module) -> torch.optim.Optimizer:
        # Not hvd.DistributedOptimizer: its gradient hooks hand Horovod the raw gradients, which are
        # channels-last (non-contiguous) for the engine's conv weights, and GPU tensors to Gloo on a
        # wheel without NCCL. Averaging in a step pre-hook goes through _inplace, which handles both.
        return average_before_step(self, optimizer, module)

    def barrier(self) -> None:
        self._hvd.barrier()

    def shutdown(self) -> None:
        self._hvd.shutdown()
