"""Prometheus metrics (kopf has none of its own), on an own registry served by start_http_server.

Labels stay low-cardinality: only reasons, stages, backends and phases; job names only in
kondense_job_progress_percent, one series per running job, removed when it ends.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS_CREATED = Counter(
    "kondense_jobs_created_total", "CompressionJobs accepted (status initialised)", registry=REGISTRY
)
JOBS_SUCCEEDED = Counter(
    "kondense_jobs_succeeded_total", "CompressionJobs that reached phase Succeeded", registry=REGISTRY
)
JOBS_FAILED = Counter(
    "kondense_jobs_failed_total", "CompressionJobs that reached phase Failed, by reason", ["reason"], registry=REGISTRY
)
STAGE_DURATION = Histogram(
    "kondense_stage_duration_seconds",
    "Wall time of a succeeded stage's Job",
    ["stage"],
    buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400, float("inf")),
    registry=REGISTRY,
)

STAGE_RESTARTS = Counter(
    "kondense_stage_restarts_total",
    "Stages re-created from their checkpoint after their pods were lost, by reason (Evicted, Preempted, "
    "NodeLost, NodeShutdown, Disrupted, OOMKilled, MPIJobEvicted)",
    ["reason"],
    registry=REGISTRY,
)

CHILD_REFUSALS = Counter(
    "kondense_child_refusals_total",
    "The API server's refusals of the operator's requests about a job's children, by HTTP code "
    "(422: an invalid child, the job failed; 403: a missing right, condition Forbidden), once per transition",
    ["code"],
    registry=REGISTRY,
)

# Known failure reasons; anything else is counted as "Other" to keep the label set bounded.
FAILURE_REASONS = (
    "InvalidSpec",
    "WorkerError",
    "OOMKilled",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "BackoffLimitExceeded",
    "DeadlineExceeded",
    "PodFailurePolicy",
    "JobFailed",
    "InvalidChild",
    "InvalidResources",  # requests and limits the API server would refuse (resources.py)
    # backend mpi (one Kubeflow MPIJob per stage)
    "MPIJobDisabled",
    "MPIJobCRDMissing",
    "MPIJobFailed",
    "MPIJobEvicted",
    # a stage's pods lost past spec.maxRestarts (restarts.REASONS)
    "Evicted",
    "Preempted",
    "NodeLost",
    "NodeShutdown",
    "Disrupted",
)


def failed(reason: str) -> None:
    JOBS_FAILED.labels(reason if reason in FAILURE_REASONS else "Other").inc()


class _JobInfo:
    """kondense_job_info{backend, stage, phase}: how many CompressionJobs this operator last saw
    in each state. A cache of what the API server says, rebuilt on the operator's resume pass,
    never a source of truth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[str, str, str]] = {}

    def set(self, uid: str, backend: str, stage: int, phase: str) -> None:
        with self._lock:
            self._jobs[uid] = (backend, str(stage), phase)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._jobs.pop(uid, None)

    def collect(self):
        family = GaugeMetricFamily(
            "kondense_job_info",
            "CompressionJobs by backend, current stage and phase",
            labels=["backend", "stage", "phase"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        with self._lock:
            for key in self._jobs.values():
                counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            family.add_metric(list(key), n)
        yield family

    def describe(self):
        return []


JOB_INFO = _JobInfo()
REGISTRY.register(JOB_INFO)


class _JobProgress:
    """kondense_job_progress_percent{namespace, name, stage}: each running CompressionJob's
    status.progress.percent. The one series with job names: as many as live jobs, one each (a new
    stage replaces the job's series), removed when the job finishes or is deleted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], tuple[int, int]] = {}

    def set(self, namespace: str, name: str, stage: int, percent: int) -> None:
        with self._lock:
            self._jobs[(namespace, name)] = (stage, percent)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._jobs.pop((namespace, name), None)

    def collect(self):
        family = GaugeMetricFamily(
            "kondense_job_progress_percent",
            "Percent of its current stage a running CompressionJob has done, as its rank 0 last reported",
            labels=["namespace", "name", "stage"],
        )
        with self._lock:
            rows = sorted(self._jobs.items())
        for (namespace, name), (stage, percent) in rows:
            family.add_metric([namespace, name, str(stage)], percent)
        yield family

    def describe(self):
        return []


JOB_PROGRESS = _JobProgress()
REGISTRY.register(JOB_PROGRESS)


def serve(port: int) -> None:
    """Serve /metrics on `port` (0: not at all)."""
    if port:
        start_http_server(port, registry=REGISTRY)
