"""The contract between whoever starts a worker (the operator's pod template, or launch_local on
this machine) and the worker itself: the KONDENSE_* variables, declared once.

    env = WorkerEnv(workers=2, slots=4, coordinator="job-s2-0.job-s2", port=29500, backend="torch")
    pod_env = env.to_env()                   # {"KONDENSE_WORKERS": "2", ...}
    WorkerEnv.from_env(os.environ)           # in the worker: parsed and checked, errors name the variable

The operator cannot know a pod's index: an Indexed Job sets JOB_COMPLETION_INDEX itself, so
`index=None` leaves KONDENSE_WORKER_INDEX out and the worker falls back to JOB_COMPLETION_INDEX.
Standard library only: the operator imports this module and must not import torch.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from kondense.errors import KondenseError
from kondense.job.spec import BACKENDS, DEFAULTS

INDEX = "KONDENSE_WORKER_INDEX"
JOB_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes in every pod of an Indexed Job
WORKERS = "KONDENSE_WORKERS"
SLOTS = "KONDENSE_SLOTS"
COORDINATOR = "KONDENSE_COORDINATOR"
PORT = "KONDENSE_PORT"
BACKEND = "KONDENSE_BACKEND"
HOSTNAME = "KONDENSE_HOSTNAME"
IFACE = "KONDENSE_IFACE"

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 29500


def env_int(
    environ: Mapping[str, str], name: str, default: int | None = None, low: int | None = None, high: int | None = None
) -> int:
    """The integer in variable `name`; `default` when it is unset or empty (an error if there is none)."""
    raw = environ.get(name, "")
    if raw == "":
        if default is None:
            raise KondenseError(
                f"{name} is not set: start the processes with `kondense worker` "
                "(or kondense.launch.worker), which sets it"
            )
        return default
    try:
        value = int(raw)
    except ValueError:
        raise KondenseError(f"{name}={raw!r} is not an integer") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bound = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else f"at least {low}"
            if low is not None
            else f"at most {high}"
        )
        raise KondenseError(f"{name}={value} must be {bound}")
    return value


@dataclass(frozen=True)
class WorkerEnv:
    """One worker of a run of `workers` x `slots` ranks; ranks meet at coordinator:port."""

    index: int | None = None  # None: from JOB_COMPLETION_INDEX (the operator's pods)
    workers: int = 1
    slots: int = 1
    coordinator: str = LOOPBACK  # worker 0's host name
    port: int = DEFAULT_PORT
    backend: str = DEFAULTS["backend"]
    hostname: str = ""  # only for messages; "" means this machine's host name
    iface: str = ""  # the network interface gloo / NCCL / Horovod use; "" lets them choose

    def to_env(self) -> dict[str, str]:
        out = {
            WORKERS: str(self.workers),
            SLOTS: str(self.slots),
            COORDINATOR: self.coordinator,
            PORT: str(self.port),
            BACKEND: self.backend,
        }
        optional = {INDEX: "" if self.index is None else str(self.index), HOSTNAME: self.hostname, IFACE: self.iface}
        out.update((name, value) for name, value in optional.items() if value)
        return out

    @staticmethod
    def from_env(environ: Mapping[str, str]) -> WorkerEnv:
        workers = env_int(environ, WORKERS, 1, 1)
        slots = env_int(environ, SLOTS, 1, 1)
        backend = environ.get(BACKEND, "") or DEFAULTS["backend"]
        if backend not in BACKENDS:
            raise KondenseError(f"{BACKEND}={backend!r} is unknown: use one of {', '.join(BACKENDS)}")
        # mpi: one launcher (worker 0) starts every rank with mpirun, and rank 0 chooses where they meet
        launched_by_mpirun = backend == "mpi"
        index_name = INDEX if environ.get(INDEX, "") != "" else JOB_INDEX
        if workers > 1 and environ.get(index_name, "") == "" and not launched_by_mpirun:
            raise KondenseError(f"{INDEX} (or {JOB_INDEX}) is not set: each of the {workers} workers needs its index")
        index = env_int(environ, index_name, 0, 0, workers - 1)
        coordinator = environ.get(COORDINATOR, "")
        if not coordinator:
            if workers > 1 and not launched_by_mpirun:
                raise KondenseError(f"{COORDINATOR} is not set: the workers need the host name of worker 0")
            coordinator = LOOPBACK
        port = env_int(environ, PORT, DEFAULT_PORT, 1, 65535)
        hostname = environ.get(HOSTNAME, "") or socket.gethostname()
        return WorkerEnv(index, workers, slots, coordinator, port, backend, hostname, environ.get(IFACE, ""))

    @property
    def size(self) -> int:
        return self.workers * self.slots

    def rank(self, local: int) -> int:
        """The global rank of local process `local` (workers hold consecutive blocks of ranks)."""
        return (self.index or 0) * self.slots + local
