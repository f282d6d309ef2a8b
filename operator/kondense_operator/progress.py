"""status.progress of a running stage: the last `KONDENSE-PROGRESS {json}` line in its rank-0 pod's log.

Rank 0 prints such a line (kondense.progress.StageProgress) at most every few seconds and at every
step boundary. The operator reads the tail of the log through the pods/log subresource, at most
once per job every `every_s` seconds, on the passes it runs anyway (events, the re-check timer).
So a worker needs no API rights, opens no port and runs no server, and no NetworkPolicy stands in
between; for backend mpi the launcher's log carries rank 0's lines, relayed by mpirun. The log is
read with timestamps, so updateTime is when rank 0 printed the line, and reading the same line
again changes nothing in the status (no patch).

A log that is not there (pod not started: 400; gone: 404) or not readable (403: an operator
installed without the pods/log right) leaves status.progress as it was: progress is a view, never
a reason for a pass to fail.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable

from kondense.job.status import SUCCEEDED

from . import metrics
from . import status as st
from .children import CONTAINER
from .kube import ApiError, Kube
from .mpijob import LAUNCHER_CONTAINER

log = logging.getLogger(__name__)

PREFIX = "KONDENSE-PROGRESS "  # kondense.progress.PREFIX (the operator does not import the engine's modules)
TAIL_LINES = 200  # rank 0 logs other lines between two progress lines; these are plenty
EVERY_ENV = "KONDENSE_PROGRESS_SECONDS"
DEFAULT_EVERY_S = 10.0
MESSAGE_CHARS = 256

# the CRD's status.progress fields rank 0 may set, by type (updateTime is the operator's)
_INTS = ("stage", "step", "steps", "percent", "etaSeconds")
_NUMBERS = ("valAccuracy", "compression")


def every_from_env(environ: dict[str, str] | None = None) -> float:
    """$KONDENSE_PROGRESS_SECONDS: seconds between two log reads of one job (default 10)."""
    raw = (os.environ if environ is None else environ).get(EVERY_ENV, "")
    if not raw:
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{EVERY_ENV}={raw!r}: must be a number of seconds > 0 (e.g. 10), or unset for 10")
    return value


def clean(record: object) -> dict | None:
    """The fields of a progress line that status.progress accepts (types as the CRD declares them,
    percent within 0..100); None where it is no progress record at all."""
    if not isinstance(record, dict):
        return None
    out: dict = {}
    for key in _INTS:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            continue
        if value in (float("inf"), float("-inf")):
            continue
        out[key] = max(0, int(value))
    for key in _NUMBERS:
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < float("inf"):
            out[key] = float(value)
    if "percent" in out:
        out["percent"] = min(100, out["percent"])
    message = record.get("message")
    if isinstance(message, str) and message:
        out["message"] = message[:MESSAGE_CHARS]
    return out if out.get("stage") else None


def _timestamp(text: str) -> str | None:
    """A log line's timestamp (timestamps=true: RFC 3339 in UTC with nanoseconds, as the kubelet
    writes it) as the status writes times, to the second."""
    try:
        when = dt.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def last_progress(log_text: str) -> dict | None:
    """status.progress from the last valid progress line of a log read with timestamps=true (each
    line `TIMESTAMP TEXT`); a line without a timestamp gets the current time. A line cut short or
    otherwise unreadable is skipped for the one before it."""
    for line in reversed(log_text.splitlines()):
        at = line.find(PREFIX)
        if at < 0:
            continue
        try:
            record = clean(json.loads(line[at + len(PREFIX) :]))
        except ValueError:
            continue
        if record is None:
            continue
        stamp = _timestamp(line[:at].strip()) if line[:at].strip() else None
        record["updateTime"] = stamp or st.now()
        return record
    return None


def rank0_pod(pods: list[dict]) -> tuple[str, str] | None:
    """(pod name, container) whose log carries rank 0's lines: an MPIJob's launcher, else worker 0;
    only a running one (a pod not started has no log yet); the newest if there are several."""
    launchers = [p for p in pods if st.is_launcher(p)]
    candidates = launchers or [p for p in pods if st.pod_index(p) == 0]
    container = LAUNCHER_CONTAINER if launchers else CONTAINER
    running = [
        p
        for p in candidates
        if (p.get("status") or {}).get("phase") == "Running"
        and any(
            cs.get("name") == container and "running" in (cs.get("state") or {})
            for cs in (p.get("status") or {}).get("containerStatuses") or []
        )
    ]
    if not running:
        return None
    newest = max(running, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    return newest["metadata"]["name"], container


class Reader:
    """At most one log read per job every `every_s` seconds (a monotonic stamp per job, in memory:
    a restarted operator simply reads at once)."""

    def __init__(self, every_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_from_env() if every_s is None else every_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._denied_logged = False

    def due(self, namespace: str, name: str) -> bool:
        """True (and the stamp taken) when this job's log may be read now."""
        now = self.clock()
        with self._lock:
            last = self._last.get((namespace, name))
            if last is not None and now - last < self.every_s:
                return False
            self._last[(namespace, name)] = now
            return True

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._last.pop((namespace, name), None)

    def read(self, kube: Kube, namespace: str, name: str, pods: list[dict]) -> dict | None:
        """The job's latest progress, or None: not due, no running rank-0 pod, no log, no line."""
        target = rank0_pod(pods)
        if target is None or not self.due(namespace, name):
            return None
        pod, container = target
        try:
            text = kube.pod_log(namespace, pod, container, TAIL_LINES)
        except ApiError as e:
            if e.status == 403 and not self._denied_logged:
                self._denied_logged = True
                log.warning("no status.progress: the operator may not read pod logs (grant get on pods/log): %s", e)
            else:
                log.debug("CompressionJob %s/%s: no progress from pod %s yet: %s", namespace, name, pod, e)
            return None
        except Exception as e:  # noqa: BLE001  (a connection problem: a view must not fail the pass; the next one tries again)
            log.debug("CompressionJob %s/%s: reading pod %s's log failed: %s", namespace, name, pod, e)
            return None
        return last_progress(text)


READER = Reader()


def follow(kube: Kube, body: dict, status: dict, stage: int, pods: list[dict]) -> None:
    """A running stage's pass: status.progress from rank 0's newest line where one was read, and
    the gauge. A progress of an earlier stage is dropped (that stage's results are in metrics)."""
    meta = body["metadata"]
    current = status.get("progress")
    if current and int(current.get("stage") or 0) < stage:
        status.pop("progress")
    fresh = READER.read(kube, meta["namespace"], meta["name"], pods)
    if fresh is not None and int(fresh["stage"]) >= stage:
        status["progress"] = fresh
    shown = status.get("progress")
    if shown and "percent" in shown:
        metrics.JOB_PROGRESS.set(meta["namespace"], meta["name"], int(shown["stage"]), int(shown["percent"]))
    else:  # nothing to show (yet, or a stage 2 without caps): no series rather than a stale one
        metrics.JOB_PROGRESS.forget(meta["namespace"], meta["name"])


def settle(namespace: str, name: str, status: dict) -> None:
    """After a pass: a finished job's gauge series goes; a succeeded job's progress too (its stages'
    results say more), a failed one keeps where it stopped."""
    if status.get("phase") in st.TERMINAL:
        metrics.JOB_PROGRESS.forget(namespace, name)
        READER.forget(namespace, name)
        if status.get("phase") == SUCCEEDED:
            status.pop("progress", None)


def forget(namespace: str, name: str) -> None:
    """The CompressionJob is gone: its gauge series and its read stamp too."""
    metrics.JOB_PROGRESS.forget(namespace, name)
    READER.forget(namespace, name)
