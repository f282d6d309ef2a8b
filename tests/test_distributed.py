"""kondense.distributed and kondense.launch.worker with real processes over Gloo on loopback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kondense import distributed
from kondense.errors import KondenseError
from kondense.job import spec
from kondense.job.worker_env import WorkerEnv
from kondense.launch import rendezvous
from kondense.launch.processes import GRACE_S, rank_environ, threads_per_rank
from kondense.launch.worker import free_port, launch_local, torchrun_args

from .conftest import backend_params, missing_module

SCRIPT = Path(__file__).parent / "dist_scripts" / "check_comm.py"
ENGINE = str(Path(distributed.__file__).parents[2])


HOROVOD_MISSING = missing_module("horovod.torch", "build it with scripts/build-horovod.sh")
BACKENDS = backend_params()


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KONDENSE_TIMEOUT", "60")  # a broken test fails in a minute instead of hanging


@pytest.fixture
def run(caplog: pytest.LogCaptureFixture):
    """launch_local of check_comm.py; returns (exit code, the lines it logged, seconds)."""
    caplog.set_level(logging.INFO, logger="kondense")

    def launch(workers: int, slots: int, backend: str, out: Path, *extra: str) -> tuple[int, list[str], float]:
        start = time.monotonic()
        rc = launch_local(workers, slots, backend, [sys.executable, str(SCRIPT), backend, str(out), *extra])
        return rc, caplog.messages, time.monotonic() - start

    return launch


def read_ranks(out: Path, size: int) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(size)]


def check_collectives(results: list[dict], backend: str) -> None:
    r0, r1 = results
    assert [r["rank"] for r in results] == [0, 1] and {r["size"] for r in results} == {2}
    assert [r["is_root"] for r in results] == [True, False]
    assert {r["backend"] for r in results} == {backend}
    assert r0["allreduce"] == r1["allreduce"] == [1.0, 2.0]
    assert r0["object"] == r1["object"] == {"plan": [1, 2, 3], "from": 0}
    assert r0["broadcast_state"] == r1["broadcast_state"]  # parameters and buffers (BatchNorm running stats)
    assert r0["shard"] == [0, 2, 4, 6, 8] and r1["shard"] == [1, 3, 5, 7, 9]
    assert r0["params_avg"] == r1["params_avg"]
    assert r0["params_wrapped"] == r1["params_wrapped"]
    # Averaged shard gradients equal the full-batch gradient: the same trajectory as one process.
    assert r0["max_diff_to_full_batch"] < 1e-5


def test_a_collective_returns_once_the_backend_thread_has_let_go_of_its_tensor() -> None:
    """gloo's worker thread drops its reference to a collective's tensor just after the caller's wait()
    returns; a tensor whose Python object that thread frees while the interpreter finalises aborts the
    rank (SIGABRT after a finished run). TorchComm's collectives return only once the thread let go."""
    from kondense.distributed.torch_backend import _collective

    tensor, held = torch.zeros(4), []

    def op(t: torch.Tensor, value: float) -> None:  # done at once; the "thread" lets go 0.3 s later
        t.fill_(value)
        held.append(t.view(-1))  # a view holds the tensor itself, as the backend's work object does
        threading.Timer(0.3, held.clear).start()

    before = tensor._use_count()
    start = time.monotonic()
    _collective(op, tensor, value=2.0)
    assert time.monotonic() - start >= 0.25 and held == [] and tensor._use_count() == before
    assert tensor.tolist() == [2.0] * 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers(backend: str, tmp_path: Path, run) -> None:
    rc, lines, _ = run(2, 1, backend, tmp_path)
    assert rc == 0, "\n".join(lines)
    results = read_ranks(tmp_path, 2)
    check_collectives(results, backend)
    # mpirun starts both workers' ranks from one launcher: to MPI this machine is one host
    assert [r["local_rank"] for r in results] == ([0, 1] if backend == "mpi" else [0, 0])
    # both ranks share this machine's cores: a thread each on 2 cores, not every core each
    assert [r["env_omp_num_threads"] for r in results] == [
        os.environ.get("OMP_NUM_THREADS") or str(threads_per_rank(2))
    ] * 2


def test_torch_one_worker_two_slots(tmp_path: Path, run) -> None:
    rc, lines, _ = run(1, 2, "torch", tmp_path)
    assert rc == 0, "\n".join(lines)
    results = read_ranks(tmp_path, 2)
    check_collectives(results, "torch")
    assert [r["local_rank"] for r in results] == [0, 1]
    assert {r["env_local_world_size"] for r in results} == {"2"}
    assert [r["env_omp_num_threads"] for r in results] == [
        os.environ.get("OMP_NUM_THREADS") or str(threads_per_rank(2))
    ] * 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_rank_fails_fast_while_peer_waits_in_collective(backend: str, tmp_path: Path, run) -> None:
    rc, lines, elapsed = run(2, 1, backend, tmp_path, "--fail-rank", "1")
    log = "\n".join(lines)
    assert rc != 0, log
    assert elapsed < 30, log
    if backend == "mpi":  # one launcher: worker 0's mpirun, whose ranks say who failed
        assert f"rank 1 (local 1) on {socket.gethostname()} failed with exit code 3" in log, log
        assert "worker 0: mpirun failed with exit code 3" in log, log
    else:
        assert "worker 1: rank 1 (local 0) failed with exit code 3" in log, log
        assert "worker 1 failed with exit code 3" in log, log


def test_failed_rank_stops_its_sleeping_local_peer(tmp_path: Path, run) -> None:
    rc, lines, elapsed = run(1, 2, "torch", tmp_path, "--fail-rank", "1", "--sleep")
    log = "\n".join(lines)
    assert rc == 3, log
    assert elapsed < 30, log
    assert "worker 0: rank 1 (local 1) failed with exit code 3" in log, log


def test_single_backend_in_process() -> None:
    comm = distributed.init("single")
    assert (comm.backend, comm.rank, comm.size, comm.local_rank, comm.is_root) == ("single", 0, 1, 0, True)
    assert comm.device("cpu") == torch.device("cpu")
    assert comm.allreduce_sum([3, 4.5]) == [3.0, 4.5]
    plan = {"layers": [1, 2]}
    assert comm.broadcast_object(plan) == plan
    model = nn.Linear(2, 1)
    before = [p.clone() for p in model.parameters()]
    comm.broadcast_module(model)
    model(torch.ones(1, 2)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    comm.average_gradients(model)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    assert comm.wrap_optimizer(opt, model) is opt
    opt.step()
    assert not torch.equal(before[0], model.weight)
    data = TensorDataset(torch.arange(10))
    assert len(comm.shard(data)) == 10
    comm.barrier()
    comm.shutdown()


def test_shard_even_drops_the_remainder() -> None:
    comm = distributed.SingleComm()
    comm.rank, comm.size = 1, 3
    data = TensorDataset(torch.arange(10))
    assert list(distributed.Comm.shard(comm, data).indices) == [1, 4, 7]
    assert list(distributed.Comm.shard(comm, data, even=True).indices) == [1, 4, 7]
    comm.rank = 0
    assert list(distributed.Comm.shard(comm, data).indices) == [0, 3, 6, 9]
    assert list(distributed.Comm.shard(comm, data, even=True).indices) == [0, 3, 6]


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(KondenseError, match="unknown distributed backend 'nccl'"):
        distributed.init("nccl")


def test_torch_backend_outside_a_launcher_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(KondenseError, match="MASTER_ADDR is not set"):
        distributed.init("torch")


def test_worker_env_from_env() -> None:
    env = WorkerEnv.from_env(
        {
            "JOB_COMPLETION_INDEX": "1",
            "KONDENSE_WORKERS": "2",
            "KONDENSE_SLOTS": "4",
            "KONDENSE_COORDINATOR": "job-0.job",
            "KONDENSE_PORT": "29501",
            "KONDENSE_BACKEND": "horovod",
            "KONDENSE_HOSTNAME": "pod-1",
            "KONDENSE_IFACE": "eth1",
        }
    )
    assert env == WorkerEnv(1, 2, 4, "job-0.job", 29501, "horovod", "pod-1", "eth1")
    assert (env.size, env.rank(0), env.rank(3)) == (8, 4, 7)
    one = WorkerEnv.from_env({})
    assert (one.index, one.workers, one.slots, one.coordinator, one.port, one.iface) == (
        0,
        1,
        1,
        "127.0.0.1",
        29500,
        "",
    )
    assert one.backend == spec.DEFAULTS["backend"] and one.hostname


def test_worker_env_round_trip() -> None:
    env = WorkerEnv(2, 3, 4, "job-s1-0.job-s1", 29600, "torch", "worker-2", "lo")
    assert WorkerEnv.from_env(env.to_env()) == env
    # the operator's pods: no index (Kubernetes sets JOB_COMPLETION_INDEX), no host name (the pod's own)
    pod = WorkerEnv(workers=3, slots=4, coordinator="job-s1-0.job-s1", port=29600, backend="horovod").to_env()
    assert pod == {
        "KONDENSE_WORKERS": "3",
        "KONDENSE_SLOTS": "4",
        "KONDENSE_COORDINATOR": "job-s1-0.job-s1",
        "KONDENSE_PORT": "29600",
        "KONDENSE_BACKEND": "horovod",
    }
    back = WorkerEnv.from_env({**pod, "JOB_COMPLETION_INDEX": "2"})
    assert (back.index, back.workers, back.slots, back.backend) == (2, 3, 4, "horovod")
    # an explicit index wins over Kubernetes' one (launch_local's workers)
    assert WorkerEnv.from_env({**pod, "JOB_COMPLETION_INDEX": "2", "KONDENSE_WORKER_INDEX": "1"}).index == 1


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"KONDENSE_WORKERS": "2", "KONDENSE_COORDINATOR": "h"}, "KONDENSE_WORKER_INDEX"),
        ({"KONDENSE_WORKERS": "2", "KONDENSE_WORKER_INDEX": "1"}, "KONDENSE_COORDINATOR"),
        (
            {"KONDENSE_WORKERS": "2", "KONDENSE_WORKER_INDEX": "2", "KONDENSE_COORDINATOR": "h"},
            "KONDENSE_WORKER_INDEX=2 must be between 0 and 1",
        ),
        (
            {"KONDENSE_WORKERS": "2", "JOB_COMPLETION_INDEX": "x", "KONDENSE_COORDINATOR": "h"},
            "JOB_COMPLETION_INDEX='x' is not an integer",
        ),
        ({"KONDENSE_WORKERS": "0"}, "KONDENSE_WORKERS=0 must be at least 1"),
        ({"KONDENSE_SLOTS": "two"}, "KONDENSE_SLOTS='two' is not an integer"),
        ({"KONDENSE_SLOTS": "0"}, "KONDENSE_SLOTS=0 must be at least 1"),
        ({"KONDENSE_PORT": "70000"}, "KONDENSE_PORT=70000 must be between 1 and 65535"),
        ({"KONDENSE_BACKEND": "nccl"}, "KONDENSE_BACKEND='nccl' is unknown: use one of"),
        # in-process mode of a run no launcher started; a worker never runs it
        ({"KONDENSE_BACKEND": "single"}, "KONDENSE_BACKEND='single' is unknown"),
    ],
)
def test_worker_env_errors(environ: dict, message: str) -> None:
    with pytest.raises(KondenseError, match=message):
        WorkerEnv.from_env(environ)


def test_launch_local_refuses_bad_arguments_before_starting_anything() -> None:
    with pytest.raises(KondenseError, match="KONDENSE_SLOTS=0 must be at least 1"):
        launch_local(1, 0, "torch", ["false"])
    with pytest.raises(KondenseError, match="KONDENSE_BACKEND='nccl' is unknown"):
        launch_local(1, 1, "nccl", ["false"])


@pytest.mark.skipif(HOROVOD_MISSING is not None, reason=HOROVOD_MISSING or "")
def test_horovod_rank_environ_follows_the_host_plan() -> None:
    env = WorkerEnv(1, 2, 2, "job-0.job", 29501, "horovod", "pod-1", "lo")
    assert rendezvous.rank_environ(env, 1, rendezvous.host_plan(env), 60) == {
        "HOROVOD_HOSTNAME": "worker-1",
        "HOROVOD_RANK": "3",
        "HOROVOD_SIZE": "4",
        "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "2",
        "HOROVOD_CROSS_RANK": "1",
        "HOROVOD_CROSS_SIZE": "2",
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": "job-0.job",
        "HOROVOD_GLOO_RENDEZVOUS_PORT": "29501",
        "HOROVOD_GLOO_TIMEOUT_SECONDS": "60",
        "HOROVOD_GLOO_IFACE": "lo",
    }


def test_torchrun_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun gets the worker's place in the run (the rank variables it derives are checked by the runs above)."""
    from torch.distributed.run import parse_args

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = WorkerEnv(1, 2, 4, "job-0.job", 29501, "torch", "pod-1", "lo")
    args = parse_args(torchrun_args(env, ["python", "train.py", "--lr", "1"]))
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "4")
    assert (args.master_addr, args.master_port, args.rdzv_backend, args.max_restarts) == (
        "job-0.job",
        29501,
        "static",
        0,
    )
    assert args.rdzv_conf == "timeout=60" and args.shutdown_timeout == GRACE_S
    assert args.no_python and (args.training_script, args.training_script_args) == ("python", ["train.py", "--lr", "1"])
    assert rank_environ(env) == {
        "KONDENSE_BACKEND": "torch",
        "KONDENSE_TIMEOUT": "60",
        "GLOO_SOCKET_IFNAME": "lo",
        "NCCL_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 4)),
    }


def test_torchrun_without_shutdown_timeout_gets_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch whose torchrun predates --shutdown-timeout (2.11, in many CUDA images) still starts its ranks."""
    import torch.distributed.run as run

    full = run.get_args_parser

    def older() -> argparse.ArgumentParser:
        parser = full()
        action = next(a for a in parser._actions if "--shutdown-timeout" in a.option_strings)
        parser._remove_action(action)
        for option in action.option_strings:
            parser._option_string_actions.pop(option)
        return parser

    monkeypatch.setattr(run, "get_args_parser", older)
    line = torchrun_args(WorkerEnv(0, 1, 1, "127.0.0.1", 29501, "torch", "pod-0", "lo"), ["python", "x.py"])
    assert "--shutdown-timeout" not in line
    assert run.parse_args(line).training_script == "python"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_stops_the_worker_and_its_ranks(backend: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": ENGINE,
        "KONDENSE_SLOTS": "2",
        "KONDENSE_BACKEND": backend,
        "KONDENSE_PORT": str(free_port()),
        "KONDENSE_IFACE": "lo",
    }
    # rank 9 does not exist: both ranks sleep until stopped
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kondense.launch.worker",
            "--",
            sys.executable,
            str(SCRIPT),
            backend,
            str(tmp_path),
            "--fail-rank",
            "9",
            "--sleep",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"pid{r}").exists() for r in (0, 1)) and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = [int((tmp_path / f"pid{r}").read_text()) for r in (0, 1)]
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=30)[0]
    finally:
        worker.kill()
    assert worker.returncode == 128 + signal.SIGTERM, output
    assert "received SIGTERM" in output, output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_launcher_module_without_configuration_says_what_is_missing(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KONDENSE_WORKERS": "2", "PYTHONPATH": ENGINE}
    result = subprocess.run(
        [sys.executable, "-m", "kondense.launch.worker", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "KONDENSE_WORKER_INDEX (or JOB_COMPLETION_INDEX) is not set" in result.stderr
