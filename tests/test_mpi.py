"""Backend mpi: mpirun's command line and environment, and real mpirun runs on this machine.

The collectives and the engine under mpirun are covered with the other backends in
test_distributed.py and test_distributed_engine.py (parametrised by backend); this module holds what
only the MPI path has: the launcher's mpirun, the rank wrapper, and their errors.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kondense import distributed
from kondense.errors import KondenseError
from kondense.job.worker_env import WorkerEnv
from kondense.launch import mpi, termination
from kondense.launch.mpi_rank import rank_names
from kondense.launch.worker import free_port, launch_local, run_worker

from .conftest import backend_params

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "dist_scripts" / "check_comm.py"
SSHD = "/usr/sbin/sshd"
ENGINE = str(Path(distributed.__file__).parents[2])
MPI = [p for p in backend_params() if p.values == ("mpi",)]  # skipped, with the reason, where not installed


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KONDENSE_TIMEOUT", "60")


def test_open_mpi_forwards_what_the_ranks_need_and_nothing_else() -> None:
    environ = {
        "PATH": "/opt/kondense/bin:/usr/bin",
        "HOME": "/home/kondense",
        "PYTHONPATH": "/src/engine",
        "KONDENSE_HOME": "/var/cache/kondense",
        "NCCL_SOCKET_IFNAME": "eth0",
        "AWS_SECRET_ACCESS_KEY": "not for the ranks",
    }
    args = mpi.mpirun_args("/usr/bin/mpirun", mpi.OPEN_MPI, 4, environ, ["python", "-m", "kondense.cli", "_rank"])
    assert args[:3] == ["/usr/bin/mpirun", "-np", "4"]
    exported = [args[i + 1] for i, a in enumerate(args) if a == "-x"]
    assert exported == ["HOME", "KONDENSE_HOME", "NCCL_SOCKET_IFNAME", "PATH", "PYTHONPATH"]
    wrapper = args.index("kondense.launch.mpi_rank")
    assert args[wrapper - 2 : wrapper] == [sys.executable, "-m"]
    assert args[wrapper + 1 :] == ["--", "python", "-m", "kondense.cli", "_rank"]
    # MPICH's Hydra passes the whole environment on by itself and knows no -x
    assert "-x" not in mpi.mpirun_args("/usr/bin/mpirun", mpi.MPICH, 4, environ, ["true"])


def test_ranks_environment_on_this_machine_and_over_a_host_file() -> None:
    env = WorkerEnv(0, workers=2, slots=2, backend="mpi")
    here = mpi.ranks_environ(env, {"PATH": "/usr/bin"}, local=True)
    assert here["KONDENSE_BACKEND"] == "mpi"
    assert here["KONDENSE_TERMINATION_LOG"] == termination.RELAY  # rank 0's summary comes back over stdout
    assert here["OMPI_MCA_rmaps_base_oversubscribe"] == "1"
    assert here["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 4))  # 4 ranks share this machine
    alone = mpi.ranks_environ(WorkerEnv(0, backend="mpi"), {"PATH": "/usr/bin"}, local=True)
    assert alone["OMP_NUM_THREADS"] == str(os.cpu_count() or 1)  # one rank: every core (mpirun's default is 1)
    pods = mpi.ranks_environ(env, {"PATH": "/usr/bin", "OMP_NUM_THREADS": "3"}, local=False)
    assert "OMPI_MCA_rmaps_base_oversubscribe" not in pods
    assert pods["OMP_NUM_THREADS"] == "3"  # the user's setting stands
    assert mpi.hostfile({"OMPI_MCA_orte_default_hostfile": "/etc/mpi/hostfile"}) == "/etc/mpi/hostfile"
    assert mpi.hostfile({"HYDRA_HOST_FILE": "/etc/mpi/hostfile"}) == "/etc/mpi/hostfile"
    assert mpi.hostfile({}) is None


def test_the_launcher_needs_no_index_and_no_coordinator() -> None:
    """An MPIJob's launcher pod is no Indexed Job's: it has neither, and starts every rank itself."""
    env = WorkerEnv.from_env({"KONDENSE_WORKERS": "3", "KONDENSE_SLOTS": "2", "KONDENSE_BACKEND": "mpi"})
    assert (env.index, env.size, env.backend) == (0, 6, "mpi")
    with pytest.raises(KondenseError, match="backend mpi runs one launcher, worker 0"):
        run_worker(WorkerEnv(1, workers=2, backend="mpi"), ["true"])


def test_rank_names_from_either_mpi() -> None:
    assert rank_names({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == "rank 3 (local 1)"
    assert rank_names({"PMI_RANK": "2", "MPI_LOCALRANKID": "0"}) == "rank 2 (local 0)"
    assert rank_names({"PMIX_RANK": "5"}) == "rank 5"
    assert "started by mpirun" in rank_names({})


def test_no_mpirun_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KondenseError, match=r"backend mpi needs mpirun on PATH.*kondense\[mpi\]"):
        run_worker(WorkerEnv(0, backend="mpi"), ["true"])


def test_no_mpi4py_is_a_clear_error_naming_the_extra() -> None:
    code = "import sys; sys.modules['mpi4py'] = None\nfrom kondense import distributed\ndistributed.init('mpi')"
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": ENGINE}, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "backend mpi needs mpi4py" in result.stderr and "pip install 'kondense[mpi]'" in result.stderr


@pytest.mark.parametrize("backend", MPI)
def test_a_killed_rank_fails_the_run_naming_it(backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kondense")
    result: list[int] = []
    # rank 9 does not exist: both ranks sleep until something stops them
    command = [sys.executable, str(SCRIPT), backend, str(tmp_path), "--fail-rank", "9", "--sleep"]
    runner = threading.Thread(target=lambda: result.append(launch_local(2, 1, backend, command)))
    start = time.monotonic()
    runner.start()
    deadline = start + 60
    while not all((tmp_path / f"pid{r}").exists() for r in (0, 1)) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(int((tmp_path / "pid1").read_text()), signal.SIGKILL)
    runner.join(timeout=60)
    log = "\n".join(caplog.messages)
    assert result and result[0] != 0, log
    assert time.monotonic() - start < 60, log  # the other rank was stopped, not waited for
    assert f"rank 1 (local 1) on {socket.gethostname()} failed with exit code -9 (killed by SIGKILL)" in log, log
    assert "worker 0: mpirun failed with" in log, log
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "pid0").read_text()), 0)


def test_rank_0_on_a_host_whose_name_is_loopback_asks_for_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from kondense.distributed import mpi_backend

    monkeypatch.delenv(mpi_backend.ADDRESS, raising=False)
    assert mpi_backend.root_address(all_local=True) == "127.0.0.1"
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    with pytest.raises(KondenseError, match="set KONDENSE_MPI_ADDR"):
        mpi_backend.root_address(all_local=False)
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "10.1.2.3")  # a pod's /etc/hosts
    assert mpi_backend.root_address(all_local=False) == "10.1.2.3"
    monkeypatch.setenv(mpi_backend.ADDRESS, "192.168.0.7")
    assert mpi_backend.root_address(all_local=False) == "192.168.0.7"


@pytest.fixture
def sshd(tmp_path: Path) -> dict[str, str]:
    """An sshd as an MPIJob's worker pods run it (the worker image's sshd_config, a key pair as the MPI
    operator mounts it), on a free port of this machine; returns what mpirun needs to reach it."""
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None:
        pytest.skip("no sshd/ssh here: make install installs openssh-server (scripts/install-mpi.sh)")
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id")], check=True)
    shutil.copy(keys / "id.pub", keys / "authorized_keys")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # root's sshd wants its privilege separation directory
    port = free_port()
    server = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(ROOT / "scripts" / "ssh" / "sshd_config"), "-h", str(keys / "id")]
        + ["-o", f"AuthorizedKeysFile={keys}/authorized_keys", "-o", f"Port={port}"]
        + ["-o", f"PidFile={tmp_path}/sshd.pid", "-o", "PermitRootLogin=prohibit-password"],
        stderr=subprocess.PIPE,
        text=True,
    )
    client = ["-F", str(ROOT / "scripts" / "ssh" / "ssh_config"), "-p", str(port), "-i", str(keys / "id")]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["ssh", *client, "127.0.0.2", "true"], capture_output=True).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not let us in: {server.stderr.read() if server.poll() is not None else ''}")
            time.sleep(0.2)
        yield {"OMPI_MCA_plm_rsh_agent": "ssh", "OMPI_MCA_plm_rsh_args": " ".join(client)}
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("backend", MPI)
def test_ranks_over_ssh_from_a_host_file_get_the_launchers_environment(
    backend: str, sshd: dict[str, str], tmp_path: Path
) -> None:
    """The MPIJob's path for real: the launcher's mpirun reads the MPI operator's host file and starts
    each rank over ssh on another host (127.0.0.2 and 127.0.0.3 are this machine, but not to Open MPI),
    where nothing of the launcher's environment arrives but what it forwards."""
    hosts = tmp_path / "hostfile"
    hosts.write_text("127.0.0.2 slots=1\n127.0.0.3 slots=1\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        **sshd,
        "PYTHONPATH": ENGINE,
        "OMPI_MCA_orte_default_hostfile": str(hosts),
        "KONDENSE_WORKERS": "2",
        "KONDENSE_BACKEND": backend,
        "KONDENSE_IFACE": "lo",
        # this machine's name resolves to 127.0.0.1, which tells rank 0 nothing about other hosts
        "KONDENSE_MPI_ADDR": "127.0.0.1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "kondense.launch.worker", "--", sys.executable, str(SCRIPT), backend, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert f"over host file {hosts}" in log, log
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["size"] for r in ranks} == {2}
    assert [r["local_rank"] for r in ranks] == [0, 0]  # one rank per host: they did not start here
    assert ranks[0]["allreduce"] == ranks[1]["allreduce"] == [1.0, 2.0]
