"""Starts the ranks of one worker (a Kubernetes pod, or one of several on this machine).

A worker runs `slots` local processes of the same command. On a pod:

    KONDENSE_WORKERS=2 KONDENSE_SLOTS=4 KONDENSE_COORDINATOR=job-0.job KONDENSE_PORT=29500 \\
    KONDENSE_BACKEND=torch python -m kondense.launch.worker -- python train.py

(the variables are kondense.job.worker_env's contract; an Indexed Job's JOB_COMPLETION_INDEX gives
the index). Backend mpi is the exception: worker 0 alone starts every rank with mpirun
(kondense.launch.mpi). torch ranks are started by torchrun (torch.distributed.run, static rendezvous at
coordinator:port), which sets their RANK/WORLD_SIZE/LOCAL_RANK/..., stops the others when one fails
and forwards signals. torchrun cannot start Horovod ranks: for those this module starts and
supervises the processes itself, and kondense.launch.rendezvous gives them worker 0's rendezvous
server and their HOROVOD_* variables. Either way a failed rank fails the worker with a line that
names its global rank and exit code; a rank whose remote peers vanish fails in its next collective
(at the latest after KONDENSE_TIMEOUT seconds), which fails its own worker in turn.
launch_local() runs several workers on this machine through exactly the same code.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from kondense import logs
from kondense.errors import KondenseError
from kondense.job.worker_env import JOB_INDEX, LOOPBACK, WorkerEnv
from kondense.launch import rendezvous
from kondense.launch.processes import (
    GRACE_S,
    Signals,
    describe,
    exit_status,
    rank_environ,
    run_processes,
    threads_per_rank,
    timeout_s,
)

logger = logging.getLogger(__name__)


def torchrun_args(env: WorkerEnv, command: list[str]) -> list[str]:
    """torchrun's command line for this worker: a static rendezvous at worker 0's coordinator:port."""
    return [
        "--nnodes",
        str(env.workers),
        "--node-rank",
        str(env.index or 0),
        "--nproc-per-node",
        str(env.slots),
        "--master-addr",
        env.coordinator,
        "--master-port",
        str(env.port),
        "--rdzv-conf",
        f"timeout={timeout_s()}",
        "--max-restarts",
        "0",
        *(["--shutdown-timeout", str(GRACE_S)] if _torchrun_knows("--shutdown-timeout") else []),
        "--no-python",
        *command,
    ]


def _torchrun_knows(option: str) -> bool:
    """Whether this torch's torchrun takes `option`: --shutdown-timeout came after 2.11, which CUDA images
    still carry, and an option it does not know stops every rank before it starts."""
    from torch.distributed.run import get_args_parser

    return any(option in action.option_strings for action in get_args_parser()._actions)


def _run_torch(env: WorkerEnv, command: list[str], prefix: str) -> int:
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun runs in this process and its ranks inherit this environment
    os.environ.update(rank_environ(env))
    try:
        run(parse_args(torchrun_args(env, command)))
    except ChildFailedError as e:
        first, _ = e.get_first_failure()
        for rank in [first, *sorted(r for r in e.failures if r != first)]:
            failure = e.failures[rank]
            logger.error(
                "%srank %d (local %d) failed with %s", prefix, rank, failure.local_rank, describe(failure.exitcode)
            )
        return exit_status(e.failures[first].exitcode) or 1
    except SignalException as e:  # torchrun has already passed it on to the ranks and stopped them
        logger.warning("%sreceived %s: stopped the ranks", prefix, e.sigval.name)
        return 128 + e.sigval
    except DistError as e:  # the rendezvous: worker 0's store did not answer within KONDENSE_TIMEOUT
        logger.error(
            "%sthe workers could not meet at %s:%d (KONDENSE_COORDINATOR, KONDENSE_PORT) within %d s "
            "(KONDENSE_TIMEOUT): %s",
            prefix,
            env.coordinator,
            env.port,
            timeout_s(),
            e,
        )
        return 1
    return 0


def _run_horovod(env: WorkerEnv, command: list[str], prefix: str) -> int:
    plan = rendezvous.host_plan(env)
    with Signals() as signals:
        server = None
        if env.index == 0:
            server = rendezvous.start_server(env, plan)
        elif not rendezvous.wait_for_server(env, timeout_s(), signals.event):
            if signals.event.is_set():
                return 128 + signals.signum
            logger.error(
                "%sHorovod's rendezvous server at %s:%d did not come up within %d s (KONDENSE_TIMEOUT)",
                prefix,
                env.coordinator,
                env.port,
                timeout_s(),
            )
            return 1
        common = {**os.environ, **rank_environ(env)}
        processes = [
            (
                f"rank {env.rank(local)} (local {local})",
                command,
                {**common, **rendezvous.rank_environ(env, local, plan, timeout_s())},
            )
            for local in range(env.slots)
        ]
        try:
            return run_processes(processes, signals, GRACE_S, prefix)
        finally:
            if server is not None:
                server.stop()


def run_worker(env: WorkerEnv, command: list[str]) -> int:
    """Run `command` as this worker's `slots` ranks (backend mpi: as every rank, from worker 0); 0 when
    all of them succeed."""
    if not command:
        raise KondenseError("no command to run on the worker's ranks")
    prefix = f"worker {env.index or 0}: "
    if env.backend == "mpi":
        from kondense.launch.mpi import run_mpi

        return run_mpi(env, command, prefix)
    return (_run_horovod if env.backend == "horovod" else _run_torch)(env, command, prefix)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch_local(
    workers: int,
    slots: int,
    backend: str,
    command: list[str],
    port: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run `workers` workers on this machine (one `python -m kondense.launch.worker` each, the path pods
    take), over loopback, with `env` on top of this environment. Their log and their ranks' (stderr) goes
    to this module's logger, line by line; their stdout is this process's. 0 when all succeed."""
    engine_dir = str(Path(__file__).resolve().parents[2])
    given = {**os.environ, **(env or {})}
    base = {
        # Every rank of every worker shares this machine's cores. Unset, each rank's torch takes all of
        # them: two one-slot workers on 2 cores ran a tiny compression 5x slower than with a thread each.
        **({} if "OMP_NUM_THREADS" in given else {"OMP_NUM_THREADS": str(threads_per_rank(workers * slots))}),
        **given,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (engine_dir, os.environ.get("PYTHONPATH", "")) if p),
    }
    base.pop(JOB_INDEX, None)
    port = port or free_port()
    iface = os.environ.get("KONDENSE_IFACE") or "lo"
    environs = [
        {**base, **WorkerEnv(i, workers, slots, LOOPBACK, port, backend, f"worker-{i}", iface).to_env()}
        for i in range(workers)
    ]
    WorkerEnv.from_env(environs[0])  # refuse bad arguments here, with the message a worker would give
    if backend == "mpi":
        environs = environs[:1]  # worker 0 is mpirun's launcher, as on an MPIJob's launcher pod
    processes = [
        (f"worker {i}", [sys.executable, "-m", "kondense.launch.worker", "--", *command], e)
        for i, e in enumerate(environs)
    ]
    with Signals() as signals:
        # a worker stops its own ranks within GRACE_S of our SIGTERM: give it that and a little more
        return run_processes(processes, signals, GRACE_S + 5, relay=True)


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        logger.error(
            "usage: python -m kondense.launch.worker -- COMMAND [ARGS...]  (configured by KONDENSE_* variables)"
        )
        return 2
    try:
        return run_worker(WorkerEnv.from_env(os.environ), argv)
    except KondenseError as e:
        logger.error("kondense worker: %s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
