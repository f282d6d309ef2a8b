"""Kueue (kueue.x-k8s.io) admission of the stage Jobs and MPIJobs: pure helpers.

With spec.managedBy kueue.x-k8s.io, every stage's Job (MPIJob) is created suspended and the operator
never touches its suspension: Kueue unsuspends it when its Workload is admitted (and suspends it
again when it preempts it). The CompressionJob's kueue.x-k8s.io/* labels and annotations
(queue-name, priority-class, ...) go onto each Job and its pod templates, which is how Kueue
finds the queue. The Job's own spec.managedBy stays unset: that field hands the Job to another
controller than the Job controller (MultiKueue), which is not what single-cluster Kueue wants.
"""

from __future__ import annotations

from kondense.job.spec import MANAGED_BY_KUEUE, JobSpec

PREFIX = "kueue.x-k8s.io/"
QUEUE_LABEL = PREFIX + "queue-name"
WAITING = "WaitingForAdmission"


def managed(spec: JobSpec) -> bool:
    """Whether Kueue, not spec.suspend, owns the suspension of the stage Jobs."""
    return spec.managed_by == MANAGED_BY_KUEUE


def propagated(body: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) of the CompressionJob that its stage Jobs and pods carry too."""
    meta = body.get("metadata") or {}

    def pick(items: dict | None) -> dict[str, str]:
        return {k: str(v) for k, v in (items or {}).items() if k.startswith(PREFIX)}

    return pick(meta.get("labels")), pick(meta.get("annotations"))


def waiting_message(body: dict, stage: int, kind: str, name: str) -> str:
    """The status message while Kueue holds a stage suspended."""
    queue = propagated(body)[0].get(QUEUE_LABEL)
    where = f"LocalQueue {queue}" if queue else f"no {QUEUE_LABEL} label: Kueue's default LocalQueue, if any"
    return f"stage {stage}: {kind} {name} waits for Kueue to admit it ({where})"
