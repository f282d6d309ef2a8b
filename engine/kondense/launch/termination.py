"""A stage's last word: rank 0's summary (kondense.job.status) where whoever started the stage reads it.

On Kubernetes that is the container's termination-message file, which the kubelet copies into the pod
status for the operator; `kondense run` points KONDENSE_TERMINATION_LOG at a file of its own; under
mpirun, rank 0 may run on another host than the launcher, so the summary travels as one line of
stdout (RELAY) that the launcher keeps (kondense.launch.mpi).
"""

from __future__ import annotations

import os
from pathlib import Path

from kondense.files import atomic_write
from kondense.job import status as st

TERMINATION_LOG = "/dev/termination-log"
RELAY = "-"  # KONDENSE_TERMINATION_LOG's value for "one line on stdout, for the launcher to keep"
SUMMARY_PREFIX = "KONDENSE-SUMMARY "


def termination_path() -> Path | None:
    """$KONDENSE_TERMINATION_LOG, else the kubelet's file where there is a writable one."""
    configured = os.environ.get("KONDENSE_TERMINATION_LOG")
    if configured:
        return Path(configured)
    default = Path(TERMINATION_LOG)
    return default if default.exists() and os.access(default, os.W_OK) else None


def write_termination_message(summary: dict) -> None:
    """The summary where the kubelet (or `kondense run`) reads it; nowhere outside both. Under mpirun
    (KONDENSE_TERMINATION_LOG=-) rank 0 may run on another host than the launcher, whose file counts:
    the summary goes to stdout as one line, which mpirun relays to the launcher (kondense.launch.mpi)."""
    text = st.summary_text(summary)
    if os.environ.get("KONDENSE_TERMINATION_LOG") == RELAY:
        print(SUMMARY_PREFIX + text, flush=True)
    else:
        write_termination_text(text)


def write_termination_text(text: str) -> None:
    path = termination_path()
    if path is None:
        return
    if path.parent.exists() and str(path).startswith("/dev/"):
        path.write_text(text)  # a device file cannot be replaced atomically
    else:
        atomic_write(path, lambda tmp: tmp.write_text(text))


def fail_message(error: str, stage: int) -> None:
    """Rank 0's last word when a stage fails with an error the user can act on."""
    try:
        write_termination_message(st.error_summary(stage, error))
    except OSError:
        pass  # the failure itself is what the user must see; the exception propagates from the caller
