"""torch.distributed: gloo for CPU tensors, plus NCCL for CUDA tensors when this rank uses a GPU."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
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
_RELEASE_S = 10.0  # how long a collective waits for gloo's worker thread to let go of its tensor


def _collective(call: Callable[..., Any], tensor: torch.Tensor, /, **kwargs: Any) -> None:
    """`call(tensor, **kwargs)`, returning once gloo's worker thread has let go of `tensor`.

    The worker thread drops its reference to a collective's tensor a moment after the caller's wait()
    returns. Were the caller's reference dropped first, that thread would free the tensor's Python
    object, which needs the interpreter; at exit, with the interpreter finalising, that aborts the
    process (SIGABRT, "terminate called without an active exception": a core dump showed the gloo
    thread freeing an allreduce's tensor during Py_FinalizeEx) and a finished run is reported failed.
    NCCL's tensors stay with its watchdog until the GPU is done: waiting for that would serialise
    training, and they are left as they are."""
    held = tensor._use_count()
    call(tensor, **kwargs)
    if tensor.device.type != "cpu":
        return
    deadline = time.monotonic() + _RELEASE_S
    while tensor._use_count() > held and time.monotonic() < deadline:
        time.sleep(0.0001)


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
        # torch's broadcast_object_list, with tensors this rank holds until gloo lets go (see _collective);
        # the pickle comes from this job's own root rank
        data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8) if self.rank == root else None
        size = torch.tensor([0 if data is None else data.numel()], dtype=torch.long)
        _collective(dist.broadcast, size, src=root)
        if data is None:
            data = torch.empty(int(size), dtype=torch.uint8)
        _collective(dist.broadcast, data, src=root)
        return obj if self.rank == root else pickle.loads(data.numpy().tobytes())  # noqa: S301

    def broadcast_module(self, module: nn.Module, root: int = 0) -> None:
        with torch.no_grad():
            for bucket in _buckets(state_tensors(module)):
                flat = _flatten_dense_tensors(bucket)
                _collective(dist.broadcast, flat, src=root)
                for t, value in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                    t.copy_(value)

    def allreduce_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        _collective(dist.all_reduce, t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def average_gradients(self, module: nn.Module) -> None:
        if self.size == 1:
            return
        with torch.no_grad():
            for bucket in _buckets(grad_tensors(module)):
                flat = _flatten_dense_tensors(bucket)
                _collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
                flat.div_(self.size)
                for g, value in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                    g.copy_(value)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, module: nn.Module) -> torch.optim.Optimizer:
        return average_before_step(self, optimizer, module)

    def barrier(self) -> None:
        if self._pg_backend == "gloo":
            dist.barrier()
        else:  # a CPU allreduce: a barrier that stays on gloo, whatever the GPU backend
            _collective(dist.all_reduce, torch.zeros(1))

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
