"""One interface over four ways of running the engine on several processes.

    comm = distributed.init("torch")          # a spec backend ("torch" | "horovod" | "mpi"), or SINGLE
    device = comm.device()                    # cuda:local_rank, or cpu
    comm.broadcast_module(model)              # everyone starts from rank 0's weights
    plan = comm.broadcast_object(plan if comm.is_root else None)
    optimizer = comm.wrap_optimizer(optimizer, model)   # step() averages gradients first
    loader = DataLoader(comm.shard(train_set, even=True), ...)
    correct, total = comm.allreduce_sum([correct, total])
    comm.shutdown()

The ranks are started by kondense.launch.worker (`kondense worker` on a Kubernetes pod): torch ranks by
torchrun, which sets MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK, Horovod ranks with the HOROVOD_*
variables of kondense.launch.rendezvous, MPI ranks by mpirun (kondense.launch.mpi), which they ask
through mpi4py. The user-facing backends are kondense.job.spec.BACKENDS; SINGLE
is the in-process mode of a run that no launcher started. Horovod and mpi4py are imported only when chosen.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING

from kondense.errors import KondenseError
from kondense.job.spec import BACKENDS

if TYPE_CHECKING:  # the classes themselves import torch; __getattr__ hands them out on first use
    from kondense.distributed.base import Comm

# Importing this package is light (no torch): the launcher uses timeout() only.
SINGLE = "single"
DEFAULT_TIMEOUT_S = 600

__all__ = ["SINGLE", "Comm", "SingleComm", "init", "timeout"]


def timeout() -> timedelta:
    """How long a collective (and the initial rendezvous) waits for its peers before it fails:
    KONDENSE_TIMEOUT seconds, default 600. Peers that die usually fail it at once (closed connections);
    the timeout covers peers that hang or vanish without a word."""
    raw = os.environ.get("KONDENSE_TIMEOUT", "")
    if not raw:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise KondenseError(f"KONDENSE_TIMEOUT={raw!r} is not a positive number of seconds")
    return timedelta(seconds=seconds)


def __getattr__(name: str):
    if name in ("Comm", "SingleComm"):
        from kondense.distributed import base

        return getattr(base, name)
    raise AttributeError(name)


def init(backend: str = SINGLE, *, device: str = "auto") -> Comm:
    """Join the group of processes this one was started in. `device` decides the torch transport:
    NCCL for CUDA tensors when this rank computes on a GPU, gloo otherwise (and always for CPU tensors)."""
    if backend == SINGLE:
        from kondense.distributed.base import SingleComm

        return SingleComm()
    if backend == "torch":
        from kondense.distributed.torch_backend import TorchComm

        return TorchComm(device)
    if backend == "horovod":
        from kondense.distributed.horovod_backend import HorovodComm

        return HorovodComm(device)
    if backend == "mpi":
        from kondense.distributed.mpi_backend import MpiComm

        return MpiComm(device)
    raise KondenseError(f"unknown distributed backend '{backend}': use one of {', '.join((SINGLE, *BACKENDS))}")
