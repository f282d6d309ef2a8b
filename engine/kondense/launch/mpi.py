"""Backend mpi's launcher: one mpirun starts every rank of a stage.

Worker 0 is the launcher: on Kubernetes the launcher pod of a Kubeflow MPIJob, whose host file
(OMPI_MCA_orte_default_hostfile or HYDRA_HOST_FILE, set by the MPI operator) lists the worker pods
that mpirun reaches over ssh; on this machine there is no host file and every rank runs here, with
no ssh. Each rank runs under kondense.launch.mpi_rank, which names the rank when it fails.

Ranks that mpirun starts over ssh do not inherit the launcher's environment. Open MPI's mpirun
passes on its OMPI_* settings and what `-x NAME` names; MPICH's passes on everything. The ranks'
stage summary comes back over mpirun's stdout (kondense.launch.termination.RELAY), and this process
writes it to its own termination-message file, where the operator (or `kondense run`) reads it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping

from kondense.errors import KondenseError
from kondense.job.worker_env import WorkerEnv
from kondense.launch import termination
from kondense.launch.processes import GRACE_S, POLL_S, Signals, describe, exit_status, rank_environ, threads_per_rank

logger = logging.getLogger(__name__)

# what the ranks need from the launcher's environment, besides what rank_environ sets
FORWARDED_PREFIXES = ("KONDENSE_", "NCCL_", "GLOO_", "OMP_", "PYTHON", "TORCH", "CUDA_", "HF_")
FORWARDED_NAMES = ("PATH", "LD_LIBRARY_PATH", "HOME", "VIRTUAL_ENV")
HOSTFILE_VARIABLES = ("OMPI_MCA_orte_default_hostfile", "OMPI_MCA_prte_default_hostfile", "HYDRA_HOST_FILE")
OPEN_MPI, MPICH = "Open MPI", "MPICH"


def mpirun_path() -> str:
    found = shutil.which("mpirun")
    if found is None:
        raise KondenseError(
            "backend mpi needs mpirun on PATH: install Open MPI or MPICH (scripts/install-mpi.sh: "
            "apt-get install openmpi-bin) and mpi4py (pip install 'kondense[mpi]')"
        )
    return found


def flavour(mpirun: str) -> str:
    """Open MPI or MPICH (Hydra), from `mpirun --version`: they take different options."""
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KondenseError(f"{mpirun} --version failed: {e}") from None
    text = out.stdout + out.stderr
    if "Open MPI" in text or "OpenRTE" in text:
        return OPEN_MPI
    if "HYDRA" in text or "MPICH" in text:
        return MPICH
    raise KondenseError(f"{mpirun} is neither Open MPI's nor MPICH's (its --version says {text.strip()[:200]!r})")


def hostfile(environ: Mapping[str, str]) -> str | None:
    """The host file the MPI operator (or the user) gave mpirun; None: every rank on this machine."""
    return next((environ[name] for name in HOSTFILE_VARIABLES if environ.get(name)), None)


def forwarded(environ: Mapping[str, str]) -> list[str]:
    return sorted(name for name in environ if name.startswith(FORWARDED_PREFIXES) or name in FORWARDED_NAMES)


def ranks_environ(env: WorkerEnv, environ: Mapping[str, str], local: bool) -> dict[str, str]:
    """mpirun's environment: the launcher's, what every rank gets (rank_environ), the summary relay,
    and Open MPI's settings (MPICH ignores them)."""
    out = {**environ, **rank_environ(env), "KONDENSE_TERMINATION_LOG": termination.RELAY}
    per_host = env.size if local else env.slots  # ranks sharing a host's cores
    # Always set: under mpirun, OpenMP's default came out as 1 thread even where a rank had every core
    out["OMP_NUM_THREADS"] = environ.get("OMP_NUM_THREADS") or str(threads_per_rank(per_host))
    # The ranks share cores with each other's threads: no pinning. MPI carries one broadcast, so
    # shared memory's single-copy transport (ptrace, refused in most containers) buys nothing.
    out.setdefault("OMPI_MCA_hwloc_base_binding_policy", "none")
    out.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    if local:
        out.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")  # more ranks than cores is the user's call here
    if os.geteuid() == 0:
        # Open MPI refuses root unless told; pods run as UID 1000, this is for root shells and CI
        out.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        out.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return out


def mpirun_args(mpirun: str, kind: str, size: int, environ: Mapping[str, str], command: list[str]) -> list[str]:
    """mpirun's command line: `size` ranks, each running `command` under kondense.launch.mpi_rank."""
    exports = [arg for name in forwarded(environ) for arg in ("-x", name)] if kind == OPEN_MPI else []
    return [mpirun, "-np", str(size), *exports, sys.executable, "-m", "kondense.launch.mpi_rank", "--", *command]


def run_mpi(env: WorkerEnv, command: list[str], prefix: str) -> int:
    """Run `command` as env.size ranks under mpirun; 0 when all of them succeed."""
    if (env.index or 0) != 0:
        raise KondenseError(
            f"backend mpi runs one launcher, worker 0, which starts every rank; this is worker {env.index}"
        )
    mpirun = mpirun_path()
    kind = flavour(mpirun)
    where = hostfile(os.environ)
    environ = ranks_environ(env, os.environ, local=where is None)
    logger.info(
        "%sstarting %d rank(s) with %s's mpirun %s",
        prefix,
        env.size,
        kind,
        f"over host file {where}" if where else "on this machine",
    )
    summaries: list[str] = []

    def relay(stream) -> None:  # rank output to our stdout, except the summary line, which is ours to keep
        for line in iter(stream.readline, ""):
            if line.startswith(termination.SUMMARY_PREFIX):
                summaries.append(line[len(termination.SUMMARY_PREFIX) :].rstrip("\n"))
            else:
                sys.stdout.write(line)
                sys.stdout.flush()
        stream.close()

    with Signals() as signals:
        try:
            proc = subprocess.Popen(
                mpirun_args(mpirun, kind, env.size, environ, command),
                env=environ,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        except OSError as e:
            raise KondenseError(f"cannot start {mpirun}: {e}") from None
        reader = threading.Thread(target=relay, args=(proc.stdout,), daemon=True)
        reader.start()
        while proc.poll() is None and not signals.event.wait(POLL_S):
            pass
        if proc.poll() is None:  # a signal: mpirun passes SIGTERM on to every rank
            name = signal.Signals(signals.signum).name
            logger.warning("%sreceived %s: stopping the %d rank(s)", prefix, name, env.size)
            proc.terminate()
            try:
                proc.wait(timeout=GRACE_S + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
    if summaries:
        termination.write_termination_text(summaries[-1])
    if signals.event.is_set():
        return 128 + signals.signum
    if proc.returncode != 0:
        logger.error("%smpirun failed with %s; the lines above name the rank", prefix, describe(proc.returncode))
        return exit_status(proc.returncode) or 1
    return 0


__all__ = ["run_mpi", "mpirun_args", "ranks_environ", "hostfile", "flavour"]
