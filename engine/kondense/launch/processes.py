"""Starting and supervising the processes of a worker's ranks, whatever starts them (the torch and
Horovod launchers of kondense.launch.worker, mpirun's in kondense.launch.mpi): what every rank gets in
its environment, one failure stopping the rest and named with its exit status, and the launcher's own
SIGTERM/SIGINT passed on.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping

from kondense.distributed import timeout
from kondense.errors import KondenseError
from kondense.job.worker_env import WorkerEnv

logger = logging.getLogger(__name__)

GRACE_S = 5  # between SIGTERM and SIGKILL for a worker's own processes
POLL_S = 0.1
SETTLE_S = 1.0  # after a failure, how long peers may take to fail on their own before being stopped


def describe(code: int) -> str:
    if code < 0:
        try:
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"exit code {code} (killed by signal {-code})"
    return f"exit code {code}"


def exit_status(code: int) -> int:
    """A process's return code as a shell would report it (128 + signal for a killed one)."""
    return 128 - code if code < 0 else code


def timeout_s() -> int:
    """KONDENSE_TIMEOUT in whole seconds: how long a rank waits for its peers."""
    return max(1, round(timeout().total_seconds()))


def stop(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM every process still running, then SIGKILL whichever is still there after `grace` seconds."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    for p in procs:
        p.wait()


class Signals:
    """SIGTERM/SIGINT to the launcher become an event (and are passed on to the children by the loop)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self.event.set()

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def supervise(procs: list[subprocess.Popen], names: list[str], signals: Signals, grace: float, prefix: str) -> int:
    """Wait for all processes; on the first failure (or a signal) stop the rest and return non-zero.

    Peers of a failed process often fail a moment later on their own (a collective loses its
    partner), and which exit a poll sees first is a race. So after the first failure the others
    get SETTLE_S to exit by themselves, and every process that failed is named, the first one first.
    """
    while True:
        failed = [i for i, p in enumerate(procs) if p.poll() is not None and p.returncode != 0]
        if failed:
            deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(POLL_S)
            failed += [i for i, p in enumerate(procs) if i not in failed and p.poll() is not None and p.returncode != 0]
            for i in failed:
                logger.error("%s%s failed with %s", prefix, names[i], describe(procs[i].returncode))
            others = [p for p in procs if p.poll() is None]
            if others:
                logger.warning("%sstopping the %d other process(es)", prefix, len(others))
            stop(procs, grace)
            return exit_status(procs[failed[0]].returncode) or 1
        if all(p.poll() is not None for p in procs):
            return 0
        if signals.event.is_set():
            running = sum(p.poll() is None for p in procs)
            logger.warning(
                "%sreceived %s: stopping %d process(es)", prefix, signal.Signals(signals.signum).name, running
            )
            stop(procs, grace)
            return 128 + signals.signum
        signals.event.wait(POLL_S)


def _relay(stream) -> None:
    for line in iter(stream.readline, ""):
        logger.info("%s", line.rstrip("\n"))
    stream.close()


def run_processes(
    processes: list[tuple[str, list[str], Mapping[str, str]]],
    signals: Signals,
    grace: float,
    prefix: str = "",
    relay: bool = False,
) -> int:
    """Start each (name, command, environment), supervise them (see supervise) and stop them all on the
    way out. With `relay`, their stderr (their log) goes to this module's logger line by line, so that the
    caller's logging sees it; their stdout stays the caller's (a result such as a report in JSON)."""
    procs, names, relays = [], [], []
    try:
        for name, command, env in processes:
            try:
                p = subprocess.Popen(
                    command,
                    env=dict(env),
                    text=True,
                    bufsize=1 if relay else -1,
                    stderr=subprocess.PIPE if relay else None,
                )
            except OSError as e:
                raise KondenseError(f"cannot start {command[0]!r}: {e}") from None
            procs.append(p)
            names.append(name)
            if relay:
                relays.append(threading.Thread(target=_relay, args=(p.stderr,), daemon=True))
                relays[-1].start()
        return supervise(procs, names, signals, grace, prefix)
    finally:
        stop(procs, grace)
        for t in relays:
            t.join(timeout=5)


def threads_per_rank(ranks: int) -> int:
    """OpenMP threads for each of `ranks` processes sharing this machine's cores: all of them in use, none
    oversubscribed (OpenMP threads of two processes on the same core spin against each other)."""
    return max(1, (os.cpu_count() or 1) // max(1, ranks))


def rank_environ(env: WorkerEnv) -> dict[str, str]:
    """What every rank of this worker gets on top of the worker's own environment, whatever the backend."""
    out = {"KONDENSE_BACKEND": env.backend, "KONDENSE_TIMEOUT": str(timeout_s())}
    if env.iface:
        out.update(GLOO_SOCKET_IFNAME=env.iface, NCCL_SOCKET_IFNAME=env.iface)
    if env.slots > 1 and "OMP_NUM_THREADS" not in os.environ:
        # no oversubscription, but all the cores in use (torchrun's own default would be 1 thread)
        out["OMP_NUM_THREADS"] = str(threads_per_rank(env.slots))
    return out
