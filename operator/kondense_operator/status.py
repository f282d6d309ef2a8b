"""What a stage's Job and pods say: the Kubernetes side of the CompressionJob's status.

The status itself (phases, conditions, transitions, the stage summary, the wording of a result)
is kondense.job.status, shared with `kondense run`; it is imported here so that the reconcile
loop reads one module. Everything here is pure (dicts in, dicts out), so the rules are tested
without an API server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kondense.job.status import (
    PENDING,
    RUNNING,
    SUSPENDED,
    TERMINAL,
    accepted,
    apply_summary,
    condition,
    failed,
    now,
    parse_summary,
    parse_time,
    running,
    set_condition,
    stage_message,
    succeeded,
)

from .children import CONTAINER, INDEX_ANNOTATION, INDEX_LABEL

# waiting reasons that will not go away by waiting: the pod cannot start as specified
IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError")
NEVER_STARTS = ("ImagePullBackOff",) + CONFIG_REASONS  # the reasons failure() gives such a pod


@dataclass
class StageOutcome:
    """What one stage's Job and pods add up to."""

    state: str  # pending | running | succeeded | failed
    reason: str = ""
    message: str = ""
    summary: dict = field(default_factory=dict)  # rank 0's termination message, parsed
    duration_s: float | None = None


def _job_condition(job: dict, type_: str) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def pod_index(pod: dict) -> int | None:
    meta = pod.get("metadata") or {}
    raw = (meta.get("labels") or {}).get(INDEX_LABEL) or (meta.get("annotations") or {}).get(INDEX_ANNOTATION)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _container_statuses(pod: dict) -> list[dict]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def _terminations(pod: dict) -> list[dict]:
    """Every terminated state of the worker container (current first, then the last one)."""
    out = []
    for cs in _container_statuses(pod):
        if cs.get("name") not in (CONTAINER, None):
            continue
        for key in ("state", "lastState"):
            t = (cs.get(key) or {}).get("terminated")
            if t:
                out.append(t)
    return out


def termination_message(pod: dict) -> str:
    for t in _terminations(pod):
        if t.get("message"):
            return t["message"]
    return ""


def _rank0_pods(pods: list[dict]) -> list[dict]:
    """Index 0's pods, the latest first (a retried index has several)."""
    zero = [p for p in pods if pod_index(p) == 0]
    return sorted(zero, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)


def rank0_summary(pods: list[dict]) -> dict | None:
    """The summary rank 0 wrote when its stage succeeded."""
    for pod in _rank0_pods(pods):
        summary = parse_summary(termination_message(pod))
        if summary is not None and "error" not in summary:
            return summary
    return None


def failure(job: dict, pods: list[dict]) -> tuple[str, str] | None:
    """(reason, message) if the stage failed or cannot start; the most actionable reason wins:
    a worker's own error, then OOMKilled, then the pod that cannot start, then the Job's reason."""
    job_failed = _job_condition(job, "Failed")
    # 1. a worker's own last word ({"error": ...}); rank 0 writes it, but any pod's counts
    for pod in sorted(pods, key=lambda p: (pod_index(p) != 0, pod_index(p) or 0)):
        for t in _terminations(pod):
            summary = parse_summary(t.get("message"))
            if summary and summary.get("error"):
                return "WorkerError", f"worker {pod_index(pod)}: {summary['error']}"
    # 2. the kernel killed a worker for memory
    for pod in pods:
        for t in _terminations(pod):
            if t.get("reason") == "OOMKilled":
                return "OOMKilled", (
                    f"worker {pod_index(pod)} (pod {pod['metadata'].get('name')}) ran out of memory: "
                    "raise spec.resources.limits.memory or lower the batch/sample budget"
                )
    # 3. a pod that can never start as specified; a Job would wait for it forever
    for pod in pods:
        for cs in _container_statuses(pod):
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason") in IMAGE_REASONS + CONFIG_REASONS:
                reason = "ImagePullBackOff" if w["reason"] in IMAGE_REASONS else w["reason"]
                return reason, (
                    f"worker {pod_index(pod)} (pod {pod['metadata'].get('name')}) cannot start: "
                    f"{w['reason']}: {w.get('message') or 'check the image and imagePullSecrets'}"
                )
    if job_failed is None:
        return None
    # 4. the Job gave up; with the log tail of a failed worker if there is one
    reason = job_failed.get("reason") or "JobFailed"
    message = job_failed.get("message") or f"the stage's Job failed ({reason})"
    for pod in pods:
        for t in _terminations(pod):
            if t.get("exitCode") not in (0, None) and t.get("message"):
                tail = t["message"].strip().splitlines()[-3:]
                message += f"; worker {pod_index(pod)} exited {t['exitCode']}: " + " | ".join(tail)
                break
    return reason, message[:2000]


def observe_stage(job: dict, pods: list[dict]) -> StageOutcome:
    """Where one stage stands, from its Job and the Job's pods."""
    st = job.get("status") or {}
    found = failure(job, pods)
    if found is not None:
        return StageOutcome("failed", *found)
    completions = (job.get("spec") or {}).get("completions") or 1
    if _job_condition(job, "Complete") or (st.get("succeeded") or 0) >= completions:
        start, end = parse_time(st.get("startTime")), parse_time(st.get("completionTime"))
        duration = (end - start).total_seconds() if start and end else None
        summary = rank0_summary(pods)
        if summary is None:
            return StageOutcome(
                "succeeded",
                "NoSummary",
                "the stage succeeded, but worker 0's termination message held no summary; metrics for it are missing",
                {},
                duration,
            )
        return StageOutcome("succeeded", "StageSucceeded", "", summary, duration)
    if (st.get("active") or 0) > 0 or (st.get("ready") or 0) > 0 or st.get("succeeded"):
        return StageOutcome("running")
    return StageOutcome("pending")


# with the shared names of kondense.job.status, so that the reconcile loop reads one module
__all__ = [
    "PENDING",
    "RUNNING",
    "SUSPENDED",
    "TERMINAL",
    "accepted",
    "apply_summary",
    "condition",
    "failed",
    "now",
    "parse_time",
    "running",
    "set_condition",
    "stage_message",
    "succeeded",
    "NEVER_STARTS",
    "StageOutcome",
    "failure",
    "observe_stage",
    "pod_index",
    "rank0_summary",
    "termination_message",
]
