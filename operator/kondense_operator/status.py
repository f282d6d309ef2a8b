"""What a stage's Job (or, for backend mpi, MPIJob) and pods say: the Kubernetes side of the CompressionJob's status.

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
from .mpijob import LAUNCHER_CONTAINER, REPLICA_INDEX_LABEL, ROLE_LABEL

# waiting reasons that will not go away by waiting: the pod cannot start as specified
IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError")
NEVER_STARTS = ("ImagePullBackOff",) + CONFIG_REASONS  # the reasons failure() gives such a pod
# a worker pod the scheduler cannot place: not a failure (a cluster autoscaler may add the node),
# but the job is not running either; the status reason, condition type and Event reason
UNSCHEDULABLE = "Unschedulable"


@dataclass
class StageOutcome:
    """What one stage's Job and pods add up to."""

    state: str  # pending | running | succeeded | failed
    reason: str = ""
    message: str = ""
    summary: dict = field(default_factory=dict)  # rank 0's termination message, parsed
    duration_s: float | None = None


def true_condition(obj: dict, type_: str) -> dict | None:
    """The condition `type_` of a Kubernetes object (Job, MPIJob, Pod) where its status is True."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def pod_index(pod: dict) -> int | None:
    """The worker index of a pod: its Indexed Job's completion index, or its MPIJob's replica index
    (None for an MPIJob's launcher)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    raw = (
        labels.get(INDEX_LABEL)
        or (meta.get("annotations") or {}).get(INDEX_ANNOTATION)
        or (labels.get(REPLICA_INDEX_LABEL) if labels.get(ROLE_LABEL) == "worker" else None)
    )
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def is_launcher(pod: dict) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL) == "launcher"


def who(pod: dict) -> str:
    """How messages name a pod: "worker N", or "the launcher" of an MPIJob."""
    return "the launcher" if is_launcher(pod) else f"worker {pod_index(pod)}"


def _order(pod: dict) -> tuple[int, int]:
    """The launcher (whose last word is the stage's) first, then worker 0, 1, ..."""
    index = pod_index(pod)
    return (0 if is_launcher(pod) else 1, index if index is not None else 1 << 30)


def _container_statuses(pod: dict) -> list[dict]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def _terminations(pod: dict) -> list[dict]:
    """Every terminated state of the worker container (current first, then the last one)."""
    out = []
    for cs in _container_statuses(pod):
        if cs.get("name") not in (CONTAINER, LAUNCHER_CONTAINER, None):
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


def _latest_first(pods: list[dict]) -> list[dict]:
    """A retried index (or launcher) has several pods: the latest first."""
    return sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)


def _summary_of(pods: list[dict]) -> dict | None:
    for pod in _latest_first(pods):
        summary = parse_summary(termination_message(pod))
        if summary is not None and "error" not in summary:
            return summary
    return None


def rank0_summary(pods: list[dict]) -> dict | None:
    """The summary rank 0 wrote when its stage succeeded."""
    return _summary_of([p for p in pods if pod_index(p) == 0 and not is_launcher(p)])


def launcher_summary(pods: list[dict]) -> dict | None:
    """The summary an MPIJob's launcher wrote (rank 0's, relayed by mpirun) when its stage succeeded."""
    return _summary_of([p for p in pods if is_launcher(p)])


def pods_failure(pods: list[dict]) -> tuple[str, str] | None:
    """(reason, message) where the pods say the stage failed or cannot start, the most actionable
    reason first: a worker's own error, then OOMKilled, then a pod that cannot start."""
    ordered = sorted(pods, key=_order)
    # 1. a worker's own last word ({"error": ...}); rank 0 (or the launcher) writes it, but any pod's counts
    for pod in ordered:
        for t in _terminations(pod):
            summary = parse_summary(t.get("message"))
            if summary and summary.get("error"):
                return "WorkerError", f"{who(pod)}: {summary['error']}"
    # 2. the kernel killed a worker for memory
    for pod in ordered:
        for t in _terminations(pod):
            if t.get("reason") == "OOMKilled":
                return "OOMKilled", (
                    f"{who(pod)} (pod {pod['metadata'].get('name')}) ran out of memory: "
                    "raise spec.resources.limits.memory or lower the batch/sample budget"
                )
    # 3. a pod that can never start as specified; a Job would wait for it forever
    for pod in ordered:
        for cs in _container_statuses(pod):
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason") in IMAGE_REASONS + CONFIG_REASONS:
                reason = "ImagePullBackOff" if w["reason"] in IMAGE_REASONS else w["reason"]
                return reason, (
                    f"{who(pod)} (pod {pod['metadata'].get('name')}) cannot start: "
                    f"{w['reason']}: {w.get('message') or 'check the image and imagePullSecrets'}"
                )
    return None


def _with_log_tail(message: str, pods: list[dict]) -> str:
    """The message, with the log tail of a pod that exited non-zero if there is one."""
    for pod in sorted(pods, key=_order):
        for t in _terminations(pod):
            if t.get("exitCode") not in (0, None) and t.get("message"):
                tail = t["message"].strip().splitlines()[-3:]
                return message + f"; {who(pod)} exited {t['exitCode']}: " + " | ".join(tail)
    return message


def failure(job: dict, pods: list[dict]) -> tuple[str, str] | None:
    """(reason, message) if the stage failed or cannot start; the most actionable reason wins:
    a worker's own error, then OOMKilled, then the pod that cannot start, then the Job's reason."""
    found = pods_failure(pods)
    if found is not None:
        return found
    job_failed = true_condition(job, "Failed")
    if job_failed is None:
        return None
    # 4. the Job gave up; with the log tail of a failed worker if there is one
    reason = job_failed.get("reason") or "JobFailed"
    message = job_failed.get("message") or f"the stage's Job failed ({reason})"
    return reason, _with_log_tail(message, pods)[:2000]


def _of_this_job(pod: dict, job_uid: str) -> bool:
    """False for a pod of an earlier Job of the same name (deleted by hand and created again: its
    pods may linger until the garbage collector takes them), which must not speak for this one."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job":
            return not job_uid or ref.get("uid") == job_uid
    return True


def unschedulable(pods: list[dict]) -> str | None:
    """The scheduler's word on a pod it cannot place (condition PodScheduled False, reason
    Unschedulable, e.g. "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."), naming the
    pod; None where every pod is placed. One unplaced worker holds up all the others (they wait
    for it at the rendezvous), so one is enough."""
    for pod in sorted(pods, key=_order):
        if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            continue
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == UNSCHEDULABLE:
                said = c.get("message") or "no node fits it"
                return f"{who(pod)} (pod {pod['metadata'].get('name')}) cannot be scheduled: {said}"
    return None


def waiting_for_nodes(status: dict, stage: int, message: str, generation: int) -> dict:
    """Phase Pending, reason and condition Unschedulable with the scheduler's message; condition
    Running False where it was True: the status never says Running while a worker cannot start."""
    out = dict(status, phase=PENDING, stage=stage, reason=UNSCHEDULABLE, message=f"stage {stage}: {message}")
    conds = set_condition(out.get("conditions") or [], UNSCHEDULABLE, True, UNSCHEDULABLE, out["message"], generation)
    if (condition(conds, "Running") or {}).get("status") == "True":
        conds = set_condition(conds, "Running", False, UNSCHEDULABLE, out["message"], generation)
    out["conditions"] = conds
    return out


def scheduled(conds: list[dict], generation: int) -> list[dict]:
    """Condition Unschedulable False once every pod is placed (where it was ever set)."""
    cond = condition(conds, UNSCHEDULABLE)
    if not cond or cond.get("status") != "True":
        return conds
    return set_condition(conds, UNSCHEDULABLE, False, "Scheduled", "every worker pod is placed on a node", generation)


def observe_stage(job: dict, pods: list[dict]) -> StageOutcome:
    """Where one stage stands, from its Job and the Job's pods."""
    st = job.get("status") or {}
    pods = [p for p in pods if _of_this_job(p, (job.get("metadata") or {}).get("uid") or "")]
    found = failure(job, pods)
    if found is not None:
        return StageOutcome("failed", *found)
    completions = (job.get("spec") or {}).get("completions") or 1
    if true_condition(job, "Complete") or (st.get("succeeded") or 0) >= completions:
        duration = _duration(st)
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
    # before `active`, which counts pending pods too
    waiting = unschedulable(pods)
    if waiting:
        return StageOutcome("pending", UNSCHEDULABLE, waiting)
    if (st.get("active") or 0) > 0 or (st.get("ready") or 0) > 0 or st.get("succeeded"):
        return StageOutcome("running")
    return StageOutcome("pending")


def _duration(status: dict) -> float | None:
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    return (end - start).total_seconds() if start and end else None


def observe_mpijob(mpijob: dict, pods: list[dict]) -> StageOutcome:
    """Where one backend-mpi stage stands, from its MPIJob's conditions (Created, Running,
    Restarting, Succeeded, Failed, Suspended) and its pods (the launcher's and the workers')."""
    found = pods_failure(pods)
    if found is not None:
        return StageOutcome("failed", *found)
    st = mpijob.get("status") or {}
    failed_cond = true_condition(mpijob, "Failed")
    if failed_cond is not None:
        # the MPI operator's reason: its launcher Job's (BackoffLimitExceeded/Error, DeadlineExceeded),
        # MPIJobEvicted, or MPIJobFailed; the part after a "/" stays in the message
        raw = failed_cond.get("reason") or "MPIJobFailed"
        reason = raw.split("/", 1)[0] or "MPIJobFailed"
        message = failed_cond.get("message") or f"the stage's MPIJob failed ({raw})"
        if raw != reason:
            message = f"{raw}: {message}"
        return StageOutcome("failed", reason, _with_log_tail(message, pods)[:2000])
    if true_condition(mpijob, "Succeeded"):
        summary = launcher_summary(pods)
        if summary is None:
            return StageOutcome(
                "succeeded",
                "NoSummary",
                "the stage succeeded, but the launcher's termination message held no summary; metrics for it are missing",
                {},
                _duration(st),
            )
        return StageOutcome("succeeded", "StageSucceeded", "", summary, _duration(st))
    waiting = unschedulable(pods)
    if waiting:
        return StageOutcome("pending", UNSCHEDULABLE, waiting)
    launcher = ((st.get("replicaStatuses") or {}).get("Launcher") or {}).get("active") or 0
    if true_condition(mpijob, "Running") or true_condition(mpijob, "Restarting") or launcher > 0:
        return StageOutcome("running")
    return StageOutcome("pending")


def observe(obj: dict, pods: list[dict]) -> StageOutcome:
    """Where one stage stands, from its Job (observe_stage) or MPIJob (observe_mpijob) and its pods."""
    return (observe_mpijob if obj.get("kind") == "MPIJob" else observe_stage)(obj, pods)


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
    "UNSCHEDULABLE",
    "StageOutcome",
    "failure",
    "observe",
    "observe_mpijob",
    "observe_stage",
    "pod_index",
    "pods_failure",
    "launcher_summary",
    "rank0_summary",
    "scheduled",
    "unschedulable",
    "waiting_for_nodes",
    "termination_message",
    "true_condition",
]
