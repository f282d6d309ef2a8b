"""Starts the ranks of one worker (a Kubernetes pod, or one of several on this machine).

A worker runs `slots` local processes of the same command, each with the environment its backend
reads. On a pod:

    KONDENSE_WORKER_INDEX=1 KONDENSE_WORKERS=2 KONDENSE_SLOTS=4 KONDENSE_COORDINATOR=job-0.job \\
    KONDENSE_PORT=29500 KONDENSE_BACKEND=horovod python -m kondense.launch.worker -- python train.py

(KONDENSE_WORKER_INDEX falls back to JOB_COMPLETION_INDEX, which an Indexed Job sets.) torch ranks
meet at the TCP store that rank 0 opens on coordinator:port; Horovod ranks meet at Horovod's Gloo
rendezvous server, which worker 0's launcher runs on coordinator:port. If a local process fails, the
others are stopped and the worker fails; a rank whose remote peers vanish fails in its next
collective (at the latest after KONDENSE_TIMEOUT seconds), which fails its own worker in turn.
launch_local() runs several workers on this machine through exactly the same code.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from kondense.distributed import BACKENDS, timeout
from kondense.errors import KondenseError

GRACE_S = 5.0          # between SIGTERM and SIGKILL for a worker's own processes
POLL_S = 0.1
SETTLE_S = 1.0       # after a failure, how long peers may take to fail on their own before being stopped
Log = Callable[[str], None]


def _int(environ: Mapping[str, str], name: str, default: int | None, low: int, high: int | None = None) -> int:
    raw = environ.get(name, "")
    if raw == "":
        if default is None:
            raise KondenseError(f"{name} is not set")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise KondenseError(f"{name}={raw!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise KondenseError(f"{name}={value} must be {bound}")
    return value


@dataclass
class WorkerEnv:
    index: int
    workers: int
    slots: int
    coordinator: str
    port: int
    backend: str
    hostname: str

    @staticmethod
    def from_environ(environ: Mapping[str, str] = os.environ) -> "WorkerEnv":
        workers = _int(environ, "KONDENSE_WORKERS", 1, 1)
        slots = _int(environ, "KONDENSE_SLOTS", 1, 1)
        index_name = "KONDENSE_WORKER_INDEX" if environ.get("KONDENSE_WORKER_INDEX", "") != "" else "JOB_COMPLETION_INDEX"
        if workers > 1 and environ.get(index_name, "") == "":
            raise KondenseError("KONDENSE_WORKER_INDEX (or JOB_COMPLETION_INDEX) is not set: "
                                f"each of the {workers} workers needs its index")
        index = _int(environ, index_name, 0, 0, workers - 1)
        coordinator = environ.get("KONDENSE_COORDINATOR", "")
        if not coordinator:
            if workers > 1:
                raise KondenseError("KONDENSE_COORDINATOR is not set: the workers need the host name of worker 0")
            coordinator = "127.0.0.1"
        port = _int(environ, "KONDENSE_PORT", 29500, 1, 65535)
        backend = environ.get("KONDENSE_BACKEND", "") or "torch"
        if backend not in BACKENDS:
            raise KondenseError(f"KONDENSE_BACKEND={backend!r} is unknown: use one of {', '.join(BACKENDS)}")
        if backend == "single" and workers * slots != 1:
            raise KondenseError(f"KONDENSE_BACKEND=single runs one process, not {workers} workers x {slots} slots: "
                                "use torch or horovod")
        hostname = environ.get("KONDENSE_HOSTNAME", "") or socket.gethostname()
        return WorkerEnv(index, workers, slots, coordinator, port, backend, hostname)

    @property
    def size(self) -> int:
        return self.workers * self.slots

    def rank(self, local: int) -> int:
        return self.index * self.slots + local


def _horovod_plan(env: WorkerEnv) -> list:
    """Horovod's host allocation plan; every process and the rendezvous server must use the same one.
    Hosts are named worker-0, worker-1, ... (Horovod only uses the names to group local ranks)."""
    try:
        from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    except ImportError as e:
        raise KondenseError(f"the horovod backend needs Horovod, which does not import here ({e}); "
                            "build and install it with scripts/build-horovod.sh") from None
    hosts = ",".join(f"worker-{i}:{env.slots}" for i in range(env.workers))
    return get_host_assignments(parse_hosts(hosts), env.size)


def _start_rendezvous(env: WorkerEnv, plan: list):
    """Horovod's Gloo rendezvous server on env.port (RendezvousServer.start() would pick a random port,
    which the other pods could not know)."""
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer, RendezvousServer

    class FixedPortRendezvous(RendezvousServer):
        def start_on(self, port: int) -> None:
            self._httpd = RendezvousHTTPServer(("", port), RendezvousHandler, self._verbose)
            self._listen_thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
            self._listen_thread.start()

    server = FixedPortRendezvous()
    try:
        server.start_on(env.port)
    except OSError as e:
        raise KondenseError(f"worker 0 cannot open Horovod's rendezvous server on port {env.port}: {e}") from None
    server.init(plan)
    return server


def _wait_for(host: str, port: int, deadline: float, stop: threading.Event) -> bool:
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with socket.create_connection((host, port), timeout=2):
                return True
        except OSError:  # not up yet, or the name does not resolve yet (a pod's DNS record comes late)
            time.sleep(0.5)
    return False


def rank_environ(env: WorkerEnv, local: int, plan: list | None = None) -> dict[str, str]:
    """The variables one local process gets on top of the worker's own environment."""
    out = {"KONDENSE_BACKEND": env.backend, "KONDENSE_TIMEOUT": str(max(1, round(timeout().total_seconds())))}
    iface = os.environ.get("KONDENSE_IFACE", "")
    if iface:
        out.update(GLOO_SOCKET_IFNAME=iface, NCCL_SOCKET_IFNAME=iface)
    if env.slots > 1 and "OMP_NUM_THREADS" not in os.environ:  # as torchrun does: no oversubscription
        out["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // env.slots))
    if env.backend == "torch":
        out.update(MASTER_ADDR=env.coordinator, MASTER_PORT=str(env.port), RANK=str(env.rank(local)),
                   WORLD_SIZE=str(env.size), LOCAL_RANK=str(local), LOCAL_WORLD_SIZE=str(env.slots),
                   GROUP_RANK=str(env.index))
    elif env.backend == "horovod":
        slot = next(s for s in plan if s.hostname == f"worker-{env.index}" and s.local_rank == local)
        out.update(HOROVOD_HOSTNAME=slot.hostname, HOROVOD_RANK=str(slot.rank), HOROVOD_SIZE=str(slot.size),
                   HOROVOD_LOCAL_RANK=str(slot.local_rank), HOROVOD_LOCAL_SIZE=str(slot.local_size),
                   HOROVOD_CROSS_RANK=str(slot.cross_rank), HOROVOD_CROSS_SIZE=str(slot.cross_size),
                   HOROVOD_CONTROLLER="gloo", HOROVOD_CPU_OPERATIONS="gloo",
                   HOROVOD_GLOO_RENDEZVOUS_ADDR=env.coordinator, HOROVOD_GLOO_RENDEZVOUS_PORT=str(env.port),
                   HOROVOD_GLOO_TIMEOUT_SECONDS=out["KONDENSE_TIMEOUT"])
        if iface:
            out["HOROVOD_GLOO_IFACE"] = iface
    return out


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"exit code {code} (killed by signal {-code})"
    return f"exit code {code}"


def _status(code: int) -> int:
    """A process's return code as a shell would report it (128 + signal for a killed one)."""
    return 128 - code if code < 0 else code


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
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


class _Signals:
    """SIGTERM/SIGINT to the launcher become an event (and are passed on to the children by the loop)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_Signals":
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


def _supervise(procs: list[subprocess.Popen], names: list[str], signals: _Signals, grace: float,
               log: Log, prefix: str) -> int:
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
                log(f"{prefix}{names[i]} failed with {_describe(procs[i].returncode)}")
            others = [p for p in procs if p.poll() is None]
            if others:
                log(f"{prefix}stopping the {len(others)} other process(es)")
            _stop(procs, grace)
            return _status(procs[failed[0]].returncode) or 1
        if all(p.poll() is not None for p in procs):
            return 0
        if signals.event.is_set():
            name = signal.Signals(signals.signum).name
            log(f"{prefix}received {name}: stopping {sum(p.poll() is None for p in procs)} process(es)")
            _stop(procs, grace)
            return 128 + signals.signum
        signals.event.wait(POLL_S)


def run_worker(env: WorkerEnv, command: list[str], *, log: Log = print) -> int:
    """Run `command` as this worker's `slots` ranks; 0 when all of them succeed."""
    if not command:
        raise KondenseError("no command to run on the worker's ranks")
    prefix = f"worker {env.index}: "
    plan, server = None, None
    with _Signals() as signals:
        if env.backend == "horovod":
            plan = _horovod_plan(env)
            if env.index == 0:
                server = _start_rendezvous(env, plan)
            elif not _wait_for(env.coordinator, env.port, time.monotonic() + timeout().total_seconds(), signals.event):
                if signals.event.is_set():
                    return 128 + signals.signum
                log(f"{prefix}Horovod's rendezvous server at {env.coordinator}:{env.port} did not come up "
                    f"within {int(timeout().total_seconds())} s (KONDENSE_TIMEOUT)")
                return 1
        procs, names = [], []
        try:
            for local in range(env.slots):
                child_env = {**os.environ, **rank_environ(env, local, plan)}
                names.append(f"rank {env.rank(local)} (local {local})")
                procs.append(subprocess.Popen(command, env=child_env))
            return _supervise(procs, names, signals, GRACE_S, log, prefix)
        except OSError as e:
            raise KondenseError(f"cannot start {command[0]!r}: {e}") from None
        finally:
            _stop(procs, GRACE_S)
            if server is not None:
                server.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _relay(stream, log: Log) -> None:
    for line in iter(stream.readline, ""):
        log(line.rstrip("\n"))
    stream.close()


def launch_local(workers: int, slots: int, backend: str, command: list[str], port: int | None = None, *,
                 log: Log = print, env: Mapping[str, str] | None = None) -> int:
    """Run `workers` worker launchers on this machine (one process each, the same path as pods), over
    loopback. Their output and their ranks' output go to `log`, line by line. 0 when all succeed."""
    if workers < 1 or slots < 1:
        raise KondenseError(f"workers and slots must be at least 1 (got {workers} x {slots})")
    if backend not in BACKENDS:
        raise KondenseError(f"unknown distributed backend '{backend}': use one of {', '.join(BACKENDS)}")
    port = port or free_port()
    engine_dir = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (engine_dir, os.environ.get("PYTHONPATH", "")) if p)
    base = {**os.environ, **(env or {}), "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1",
            "KONDENSE_WORKERS": str(workers), "KONDENSE_SLOTS": str(slots), "KONDENSE_BACKEND": backend,
            "KONDENSE_COORDINATOR": "127.0.0.1", "KONDENSE_PORT": str(port),
            "KONDENSE_IFACE": os.environ.get("KONDENSE_IFACE") or "lo"}
    base.pop("JOB_COMPLETION_INDEX", None)
    lock = threading.Lock()

    def locked_log(message: str) -> None:
        with lock:
            log(message)

    procs, relays = [], []
    with _Signals() as signals:
        try:
            for i in range(workers):
                env = {**base, "KONDENSE_WORKER_INDEX": str(i), "KONDENSE_HOSTNAME": f"worker-{i}"}
                p = subprocess.Popen([sys.executable, "-m", "kondense.launch.worker", "--", *command], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
                procs.append(p)
                relays.append(threading.Thread(target=_relay, args=(p.stdout, locked_log), daemon=True))
                relays[-1].start()
            # A worker stops its own ranks within GRACE_S of our SIGTERM; give it that and a little more.
            return _supervise(procs, [f"worker {i}" for i in range(workers)], signals, GRACE_S + 5, locked_log, "")
        finally:
            _stop(procs, GRACE_S + 5)
            for t in relays:
                t.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m kondense.launch.worker -- COMMAND [ARGS...]  (configured by KONDENSE_* variables)",
              file=sys.stderr)
        return 2
    try:
        return run_worker(WorkerEnv.from_environ(), argv, log=lambda m: print(m, flush=True))
    except KondenseError as e:
        print(f"kondense worker: {e}", flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
