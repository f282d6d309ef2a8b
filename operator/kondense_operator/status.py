"""The CompressionJob's status: conditions, phases, and what a stage's Job and pods say.

Everything here is pure (dicts in, dicts out), so the reconcile loop stays a list of steps and
the rules are tested without an API server. The status has the shape `kondense run` writes
(kondense.launch.stages.run_job): phase, stage, startTime, completionTime, conditions, metrics
{original, stage1, stage2, enhancement}, artifacts; plus observedGeneration, reason, message.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from .children import CONTAINER, INDEX_ANNOTATION, INDEX_LABEL

PENDING, RUNNING, SUCCEEDED, FAILED, SUSPENDED = "Pending", "Running", "Succeeded", "Failed", "Suspended"
TERMINAL = (SUCCEEDED, FAILED)

# waiting reasons that will not go away by waiting: the pod cannot start as specified
IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def set_condition(conditions: list[dict], type_: str, status: bool, reason: str, message: str, generation: int) -> list[dict]:
    """metav1.Condition semantics: one entry per type; lastTransitionTime moves only when the
    status flips, so `kubectl wait --for=condition=Succeeded` and dashboards see real transitions."""
    value = "True" if status else "False"
    out = [dict(c) for c in conditions]
    for c in out:
        if c.get("type") == type_:
            if c.get("status") != value:
                c["lastTransitionTime"] = now()
            c.update(status=value, reason=reason, message=message, observedGeneration=generation)
            return out
    out.append({"type": type_, "status": value, "reason": reason, "message": message, "lastTransitionTime": now(),
                "observedGeneration": generation})
    return out


def condition(conditions: list[dict], type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


@dataclass
class StageOutcome:
    """What one stage's Job and pods add up to."""

    state: str                 # pending | running | succeeded | failed
    reason: str = ""
    message: str = ""
    summary: dict = field(default_factory=dict)   # rank 0's termination message, parsed
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


def parse_message(text: str) -> dict | None:
    """Rank 0's JSON summary, or None for anything else (FallbackToLogsOnError puts the log's
    tail there when a container fails without writing one)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _rank0_pods(pods: list[dict]) -> list[dict]:
    """Index 0's pods, the latest first (a retried index has several)."""
    zero = [p for p in pods if pod_index(p) == 0]
    return sorted(zero, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)


def stage_summary(pods: list[dict]) -> dict | None:
    """The summary rank 0 wrote when its stage succeeded."""
    for pod in _rank0_pods(pods):
        summary = parse_message(termination_message(pod))
        if summary is not None and "error" not in summary:
            return summary
    return None


def failure(job: dict, pods: list[dict]) -> tuple[str, str] | None:
    """(reason, message) if the stage failed or cannot start; the most actionable reason wins:
    a worker's own error, then OOMKilled, then the pod that cannot start, then the Job's reason."""
    failed = _job_condition(job, "Failed")
    # 1. a worker's own last word ({"error": ...}); rank 0 writes it, but any pod's counts
    for pod in sorted(pods, key=lambda p: (pod_index(p) != 0, pod_index(p) or 0)):
        for t in _terminations(pod):
            summary = parse_message(t.get("message") or "")
            if summary and summary.get("error"):
                return "WorkerError", f"worker {pod_index(pod)}: {summary['error']}"
    # 2. the kernel killed a worker for memory
    for pod in pods:
        for t in _terminations(pod):
            if t.get("reason") == "OOMKilled":
                return "OOMKilled", (f"worker {pod_index(pod)} (pod {pod['metadata'].get('name')}) ran out of memory: "
                                     "raise spec.resources.limits.memory or lower the batch/sample budget")
    # 3. a pod that can never start as specified; a Job would wait for it forever
    for pod in pods:
        for cs in _container_statuses(pod):
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason") in IMAGE_REASONS + CONFIG_REASONS:
                reason = "ImagePullBackOff" if w["reason"] in IMAGE_REASONS else w["reason"]
                return reason, (f"worker {pod_index(pod)} (pod {pod['metadata'].get('name')}) cannot start: "
                                f"{w['reason']}: {w.get('message') or 'check the image and imagePullSecrets'}")
    if failed is None:
        return None
    # 4. the Job gave up; with the log tail of a failed worker if there is one
    reason = failed.get("reason") or "JobFailed"
    message = failed.get("message") or f"the stage's Job failed ({reason})"
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
        summary = stage_summary(pods)
        if summary is None:
            return StageOutcome("succeeded", "NoSummary", "the stage succeeded, but worker 0's termination message "
                                "held no summary; metrics for it are missing", {}, duration)
        return StageOutcome("succeeded", "StageSucceeded", "", summary, duration)
    if (st.get("active") or 0) > 0 or (st.get("ready") or 0) > 0 or st.get("succeeded"):
        return StageOutcome("running")
    return StageOutcome("pending")


def apply_summary(status: dict, summary: dict) -> dict:
    """Stage results into the status, as kondense.launch.stages.run_job does on one machine."""
    out = dict(status)
    metrics = dict(out.get("metrics") or {})
    metrics.update(summary.get("metrics") or {})
    if summary.get("enhancement"):
        metrics["enhancement"] = summary["enhancement"]
    out["metrics"] = metrics
    if summary.get("artifacts"):
        out["artifacts"] = summary["artifacts"]
    if "trainingSamples" in summary:
        out["trainingSamples"] = summary["trainingSamples"]
    return out


def success_message(status: dict) -> str:
    e = (status.get("metrics") or {}).get("enhancement") or {}
    try:
        return f"compressed {float(e['params']):.1f}x (params), {float(e['size']):.1f}x (size) at {float(e['accuracyDrop']):.2f} points"
    except (KeyError, TypeError, ValueError):
        return "all stages succeeded"
