"""torch.distributed: gloo for CPU tensors, plus NCCL for CUDA tensors when this rank uses a GPU."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from kondense.distributed import timeout
from kondense.distributed.base import Comm, average_before_step, grad_tensors, state_tensors
from kondense.errors import KondenseError
from kondense.job.worker_env import env_int

_CPU = torch.device("cpu")


def _buckets(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Group tensors by (device, dtype) in first-seen order, so each group travels as one flat tensor."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())


class TorchComm(Comm):
    backend = "torch"

    def __init__(self, device: str = "auto") -> None:
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise KondenseError(
                    f"{name} is not set: start torch ranks with `kondense worker` "
                    f"(or kondense.launch.worker), which sets it"
                )
        rank = env_int(os.environ, "RANK")
        size = env_int(os.environ, "WORLD_SIZE", low=1)
        if not 0 <= rank < size:
            raise KondenseError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={size})")
        self._join(device, rank, size, env_int(os.environ, "LOCAL_RANK", 0))

    def _join(self, device: str, rank: int, size: int, local_rank: int, store: dist.Store | None = None) -> None:
        """Join the process group as `rank` of `size`: through `store` where the caller made one, else
        through the MASTER_ADDR/MASTER_PORT that torchrun set."""
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self._device = self.device(device)
        # One process group, two transports: CPU tensors (objects, metrics) always go over gloo; when
        # this rank computes on a GPU its tensors (gradients, parameters) go over NCCL.
        self._pg_backend = "cpu:gloo,cuda:nccl" if self._device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            where = {"store": store} if store is not None else {"init_method": "env://"}
            dist.init_process_group(backend=self._pg_backend, rank=rank, world_size=size, timeout=timeout(), **where)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        box = [obj if self.rank == root else None]
        dist.broadcast_object_list(box, src=root, device=_CPU)
        return box[0]

    def broadcast_module(self, module: nn.Module, root: int = 0) -> None:
        with torch.no_grad():
            for bucket in _buckets(state_tensors(module)):
                flat = _flatten_dense_tensors(bucket)
                dist.broadcast(flat, src=root)
                for t, value in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                    t.copy_(value)

    def allreduce_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def average_gradients(self, module: nn.Module) -> None:
        if self.size == 1:
            return
        with torch.no_grad():
            for bucket in _buckets(grad_tensors(module)):
                flat = _flatten_dense_tensors(bucket)
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                flat.div_(self.size)
                for g, value in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                    g.copy_(value)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, module: nn.Module) -> torch.optim.Optimizer:
        return average_before_step(self, optimizer, module)

    def barrier(self) -> None:
        if self._pg_backend == "gloo":
            dist.barrier()
        else:  # a CPU allreduce: a barrier that stays on gloo, whatever the GPU backend
            dist.all_reduce(torch.zeros(1))

    def shutdown(self) -> None:
        if dist.is_initialized():
            # A rank that tears down its gloo pairs while a peer still uses them aborts the peer (SIGABRT,
            # "terminate called without an active exception"). A barrier alone left that in about 1 run in
            # 8: a rank can return from it while its last message is still being handled. So every rank
            # also says through the store that it is past the barrier, and leaves once all are; the rank
            # that hosts the store leaves last, once every other has read it.
            self.barrier()
            store = dist.distributed_c10d._get_default_store()
            store.set(f"kondense/past-barrier/{self.rank}", "1")
            store.wait([f"kondense/past-barrier/{r}" for r in range(self.size)])
            store.set(f"kondense/leaving/{self.rank}", "1")
            if self.rank == 0:
                store.wait([f"kondense/leaving/{r}" for r in range(self.size)])
            dist.destroy_process_group()
