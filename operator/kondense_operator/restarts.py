"""Whether a failed stage is re-created or fails the job: pure rules over its Job (or MPIJob) and pods.

A stage whose pods were lost for infrastructure reasons (eviction, preemption, a lost or shut down
node; an OOMKilled worker where spec.restartOnOOMKilled) gets a new Job, which resumes from the
stage's checkpoint in the output directory (the engine resumes a run whose output directory holds
its state, kondense.pipeline.runstate). Anything else is final: the worker's own error (a user
error), a pod that cannot start, the deadline.

A loss wins over a worker's own error on the same attempt: a rank whose peer vanished fails in its
next collective and writes an error of its own, which is the loss's consequence, not its cause.
Nothing is decided while the Job's controller still runs the attempt (no Failed condition, or a pod
still active): the old ranks must have stopped before new ones write to the same output directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from kondense.job.spec import JobSpec

from .status import NEVER_STARTS, StageOutcome, true_condition, who

RESTART, FAIL, WAIT = "restart", "fail", "wait"

# the pod's status.reason where the kubelet or the node lifecycle ended it -> the restart reason
POD_REASONS = {
    "Evicted": "Evicted",  # node pressure
    "Preempted": "Preempted",
    "NodeLost": "NodeLost",
    "NodeShutdown": "NodeShutdown",
    "Shutdown": "NodeShutdown",
    "Terminated": "NodeShutdown",  # graceful node shutdown: "Pod was terminated in response to imminent node shutdown"
}
# condition DisruptionTarget's reason (Kubernetes 1.26+) -> the restart reason
DISRUPTION_REASONS = {
    "PreemptionByScheduler": "Preempted",
    "PreemptionByKubeScheduler": "Preempted",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
    "DeletionByTaintManager": "NodeLost",
    "DeletionByPodGC": "NodeLost",
}
DISRUPTED = "Disrupted"  # a DisruptionTarget with a reason not listed above
# every reason a restart can have: kondense_stage_restarts_total's bounded label set
REASONS = tuple(sorted({*POD_REASONS.values(), *DISRUPTION_REASONS.values(), DISRUPTED, "OOMKilled", "MPIJobEvicted"}))


@dataclass(frozen=True)
class Loss:
    reason: str  # one of REASONS
    message: str


@dataclass(frozen=True)
class Decision:
    action: str  # RESTART | FAIL | WAIT
    reason: str = ""
    message: str = ""


def _failed_reason(obj: dict) -> str | None:
    """The Job's (MPIJob's) Failed reason, without an MPIJob's "/detail"; None while it has not failed."""
    cond = true_condition(obj, "Failed")
    if cond is None:
        return None
    return (cond.get("reason") or "").split("/", 1)[0]


def _active(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Pending", "Running", None)


def pod_loss(pod: dict) -> Loss | None:
    """How the infrastructure took this pod, if it did."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name")
    disruption = true_condition(pod, "DisruptionTarget")
    reason = POD_REASONS.get(status.get("reason") or "")
    if reason is None and disruption is None:
        return None
    if reason is None:
        reason = DISRUPTION_REASONS.get(disruption.get("reason") or "", DISRUPTED)
    why = status.get("reason") or (disruption or {}).get("reason")
    text = status.get("message") or (disruption or {}).get("message") or ""
    return Loss(reason, f"{who(pod)} (pod {name}) was lost: {why}" + (f": {text}" if text else ""))


def _oom(pods: list[dict]) -> Loss | None:
    for pod in pods:
        status = pod.get("status") or {}
        for cs in list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or []):
            for key in ("state", "lastState"):
                if ((cs.get(key) or {}).get("terminated") or {}).get("reason") == "OOMKilled":
                    name = (pod.get("metadata") or {}).get("name")
                    return Loss("OOMKilled", f"{who(pod)} (pod {name}) ran out of memory (OOMKilled)")
    return None


def loss(obj: dict, pods: list[dict], restart_on_oom: bool) -> Loss | None:
    """The first infrastructure loss among the attempt's pods, or the one its Job (MPIJob) records
    (the lost pod may be gone by then); OOMKilled counts only where `restart_on_oom`."""
    for pod in pods:
        found = pod_loss(pod)
        if found is not None:
            return found
    cond = true_condition(obj, "Failed") or {}
    if (cond.get("reason") or "").startswith("MPIJobEvicted"):
        return Loss("MPIJobEvicted", cond.get("message") or "the MPIJob's pods were evicted")
    if cond.get("reason") == "PodFailurePolicy" and "DisruptionTarget" in (cond.get("message") or ""):
        # children.pod_failure_policy's FailJob rule matched
        return Loss(DISRUPTED, cond.get("message") or "a pod was disrupted")
    return _oom(pods) if restart_on_oom else None


def decide(obj: dict, pods: list[dict], outcome: StageOutcome, spec: JobSpec, restarts: int) -> Decision:
    """What to do with a stage whose outcome is "failed": re-create it (RESTART), fail the job
    (FAIL, with the reason and message to show), or look again on the next event (WAIT)."""
    final = Decision(FAIL, outcome.reason, outcome.message)
    failed = _failed_reason(obj)
    if failed == "DeadlineExceeded" or outcome.reason in NEVER_STARTS:
        return final  # the same Job would run out of time again; an unstartable pod never starts
    lost = loss(obj, pods, spec.restart_on_oom)
    if lost is None:
        if outcome.reason == "WorkerError" and failed is None:
            return Decision(WAIT)  # a peer's loss may yet show: a vanished peer makes a rank fail too
        return final
    if restarts >= spec.max_restarts:
        return Decision(
            FAIL,
            lost.reason,
            f"{lost.message}; not restarted after {restarts} restart(s) (spec.maxRestarts {spec.max_restarts})",
        )
    if failed is None or any(_active(p) for p in pods):
        return Decision(WAIT)  # the Job's controller has not stopped this attempt yet
    return Decision(RESTART, lost.reason, lost.message)


def restarts_of(status: dict) -> int:
    """status.restarts: the stage re-creations so far, in all (absent: none)."""
    try:
        return max(0, int(status.get("restarts") or 0))
    except (TypeError, ValueError):
        return 0
