"""Ranks started by mpirun: MPI tells each its place, torch.distributed carries the tensors.

mpi4py gives rank, size and the local rank (the ranks sharing this node); rank 0 opens a torch
TCPStore on a port the kernel picks and broadcasts its address over MPI, and the process group is
built on that store. From then on the collectives are TorchComm's: gloo for CPU tensors, NCCL for
GPU ones. MPI itself carries one broadcast. Why not Horovod over MPI, or the collectives over
mpi4py: Horovod would have to be rebuilt against each site's MPI, and mpi4py moves CPU buffers only,
so GPU gradients would lose NCCL. docs/architecture.md says more.
"""

from __future__ import annotations

import os
import socket

import torch.distributed as dist

from kondense.distributed import timeout
from kondense.distributed.torch_backend import TorchComm
from kondense.errors import KondenseError

ADDRESS = "KONDENSE_MPI_ADDR"  # where the other ranks reach rank 0, where its host name does not say
LOOPBACK = "127.0.0.1"


def mpi_world():
    """mpi4py's MPI.COMM_WORLD (importing mpi4py initialises MPI), or a clear error saying what to install."""
    try:
        import mpi4py

        # MPI_Finalize only in shutdown(), after a stage went well: a rank that fails then ends without
        # it, which Open MPI and MPICH take as an abnormal end and stop every rank at once. Finalized
        # at exit (mpi4py's default), the failure would look orderly and the others would wait in
        # their collectives for KONDENSE_TIMEOUT.
        mpi4py.rc.finalize = False
        from mpi4py import MPI
    except ImportError as e:
        raise KondenseError(
            f"backend mpi needs mpi4py, which does not import here ({e}): "
            "pip install 'kondense[mpi]', with an MPI runtime installed (Open MPI or MPICH: scripts/install-mpi.sh)"
        ) from None
    return MPI, MPI.COMM_WORLD


def root_address(all_local: bool) -> str:
    """The address rank 0's store listens on, as the other ranks must dial it."""
    configured = os.environ.get(ADDRESS, "")
    if configured:
        return configured
    if all_local:
        return LOOPBACK
    address = socket.gethostbyname(socket.gethostname())
    if address.startswith("127."):
        raise KondenseError(
            f"rank 0's host name {socket.gethostname()!r} resolves to {address}, which the ranks on other "
            f"hosts cannot reach: set {ADDRESS} to an address of rank 0's host that they can (mpirun -x {ADDRESS})"
        )
    return address


class MpiComm(TorchComm):
    backend = "mpi"

    def __init__(self, device: str = "auto") -> None:
        MPI, world = mpi_world()
        rank, size = world.Get_rank(), world.Get_size()
        node = world.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = node.Get_rank(), node.Get_size()
        node.Free()
        store = None
        if rank == 0:
            # port 0: no race for a free port; wait_for_workers=False: they dial only after the broadcast
            store = dist.TCPStore(
                LOOPBACK, 0, size, is_master=True, timeout=timeout(), wait_for_workers=False, use_libuv=True
            )
        where = world.bcast((root_address(local_size == size), store.port) if rank == 0 else None, root=0)
        if rank != 0:
            store = dist.TCPStore(where[0], where[1], size, is_master=False, timeout=timeout())
        self._join(device, rank, size, local_rank, store)

    def shutdown(self) -> None:
        super().shutdown()
        MPI, _ = mpi_world()
        if not MPI.Is_finalized():
            MPI.Finalize()
