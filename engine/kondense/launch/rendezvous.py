"""What a worker needs for Horovod that torchrun cannot give: the host plan, Horovod's Gloo
rendezvous server on worker 0 at a fixed port (no ssh, no horovodrun), and each local process's
HOROVOD_* variables. The processes themselves are started and supervised by kondense.launch.worker.
"""

from __future__ import annotations

import socket
import threading
import time

from kondense.errors import KondenseError
from kondense.job.worker_env import WorkerEnv


def host_plan(env: WorkerEnv) -> list:
    """Horovod's host allocation plan; every process and the rendezvous server must use the same one.
    Hosts are named worker-0, worker-1, ... (Horovod only uses the names to group local ranks)."""
    try:
        from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    except ImportError as e:
        raise KondenseError(
            f"the horovod backend needs Horovod, which does not import here ({e}); "
            "build and install it with scripts/build-horovod.sh, or use the torch backend"
        ) from None
    hosts = ",".join(f"worker-{i}:{env.slots}" for i in range(env.workers))
    return get_host_assignments(parse_hosts(hosts), env.size)


def start_server(env: WorkerEnv, plan: list):
    """Horovod's Gloo rendezvous server on env.port; the caller stops it. (RendezvousServer.start()
    would pick a random port, which the other pods could not know.)"""
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


def wait_for_server(env: WorkerEnv, seconds: float, stop: threading.Event) -> bool:
    """True once worker 0's server accepts connections; False after `seconds` or when `stop` is set."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with socket.create_connection((env.coordinator, env.port), timeout=2):
                return True
        except OSError:  # not up yet, or the name does not resolve yet (a pod's DNS record comes late)
            stop.wait(0.5)
    return False


def rank_environ(env: WorkerEnv, local: int, plan: list, timeout_s: int) -> dict[str, str]:
    """The HOROVOD_* variables of local process `local`, as horovodrun would set them."""
    slot = next(s for s in plan if s.hostname == f"worker-{env.index or 0}" and s.local_rank == local)
    out = {
        "HOROVOD_HOSTNAME": slot.hostname,
        "HOROVOD_RANK": str(slot.rank),
        "HOROVOD_SIZE": str(slot.size),
        "HOROVOD_LOCAL_RANK": str(slot.local_rank),
        "HOROVOD_LOCAL_SIZE": str(slot.local_size),
        "HOROVOD_CROSS_RANK": str(slot.cross_rank),
        "HOROVOD_CROSS_SIZE": str(slot.cross_size),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": env.coordinator,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(env.port),
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(timeout_s),
    }
    if env.iface:
        out["HOROVOD_GLOO_IFACE"] = env.iface
    return out
