"""One rank under mpirun: runs the rank's command and, when it fails, says which rank it was.

    mpirun -np 4 python -m kondense.launch.mpi_rank -- python -m kondense.cli _rank -- ...

mpirun's own report of a failure differs between Open MPI and MPICH, and names no rank at all
for some of them; this process knows its rank from the variables either sets and logs the same
line the other backends' launchers do. The command joins MPI itself (it inherits those variables).
The command dies with this process (PR_SET_PDEATHSIG), and a SIGTERM or SIGINT from mpirun is
passed on to it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping

from kondense import logs
from kondense.launch.processes import describe, exit_status

logger = logging.getLogger(__name__)

# (global rank, local rank) variables: Open MPI, MPICH (Hydra), PMIx
RANK_VARIABLES = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "MPI_LOCALRANKID"),
    ("PMIX_RANK", ""),
)
PR_SET_PDEATHSIG = 1


def rank_names(environ: Mapping[str, str]) -> str:
    """'rank 3 (local 1)' as far as the MPI's variables tell."""
    for rank, local in RANK_VARIABLES:
        if environ.get(rank):
            return f"rank {environ[rank]}" + (f" (local {environ[local]})" if environ.get(local) else "")
    return "a rank (no MPI rank variable set: was it started by mpirun?)"


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when this wrapper dies, so a killed wrapper leaves no rank behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: mpirun's own clean-up still applies


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        logger.error("usage: python -m kondense.launch.mpi_rank -- COMMAND [ARGS...]  (under mpirun)")
        return 2
    who = f"{rank_names(os.environ)} on {socket.gethostname()}"
    try:
        child = subprocess.Popen(argv, preexec_fn=_die_with_parent)
    except OSError as e:
        logger.error("%s: cannot start %r: %s", who, argv[0], e)
        return 127
    stopped: list[int] = []

    def pass_on(signum, frame) -> None:
        stopped.append(signum)
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, pass_on)
    code = child.wait()
    if code != 0 and stopped:
        logger.warning("%s stopped by %s from mpirun", who, signal.Signals(stopped[0]).name)
    elif code != 0:
        logger.error("%s failed with %s", who, describe(code))
    return exit_status(code)


if __name__ == "__main__":
    sys.exit(main())
