"""One pass over one CompressionJob: read the world, move the status one step, write it back.

Level-triggered: every trigger (the CompressionJob created or resumed, spec.suspend changed, a
child Job or Pod changed) runs the same pass, which derives everything from the API server:
the status says which stage is current, the children are found by their deterministic names,
rank 0's termination message says how a stage ended. Nothing lives only in this process, so a
restarted operator picks up where the last one stopped without creating anything twice.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kondense.job import spec as spec_mod
from kondense.job.spec import parse_for_kubernetes  # re-exported: the operator's validation lives there

from . import children, metrics
from . import status as st
from .config import WorkerConfig
from .kube import Kube

# Event(body, type, reason, message): kopf.event in the operator, a list in tests
EventSink = Callable[[dict, str, str, str], None]

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(namespace: str, name: str) -> threading.Lock:
    """Passes over one CompressionJob run one at a time (a Job and a Pod event may arrive
    together); this serialises work, it holds no state."""
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


@dataclass
class Context:
    kube: Kube
    worker: WorkerConfig
    event: EventSink


def reconcile(ctx: Context, namespace: str, name: str) -> dict | None:
    """Run one pass; returns the status written (or found), None if the object is gone."""
    with _lock(namespace, name):
        body = ctx.kube.get_cj(namespace, name)
        if body is None:
            return None
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return None  # the garbage collector removes the children through their owner references
        old = body.get("status") or {}
        new = _step(ctx, body, copy.deepcopy(old))
        if new != old:
            # a merge patch: keys that disappeared must be nulled explicitly
            patch = dict(new)
            for key in old:
                if key not in new:
                    patch[key] = None
            ctx.kube.patch_cj_status(namespace, name, patch)
        backend = str((body.get("spec") or {}).get("backend") or spec_mod.DEFAULTS["backend"])
        metrics.JOB_INFO.set(
            body["metadata"].get("uid") or f"{namespace}/{name}",
            backend,
            int(new.get("stage") or 0),
            str(new.get("phase") or st.PENDING),
        )
        return new


def _step(ctx: Context, body: dict, status: dict) -> dict:
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    phase = status.get("phase")
    if phase in st.TERMINAL:
        return status

    # 1. the spec: invalid is final (the spec is immutable, so retrying cannot help)
    try:
        job = parse_for_kubernetes(body)
    except spec_mod.SpecError as e:
        return _fail(ctx, body, status, "InvalidSpec", f"{e.field}: {e.problem}" if e.field else e.problem, generation)

    # 2. accepted
    if not phase:
        status.update(st.accepted(job.spec, generation))
        metrics.JOBS_CREATED.inc()
        ctx.event(body, "Normal", "Created", status["conditions"][0]["message"])
    status["observedGeneration"] = generation

    stages = spec_mod.job_stages(job.spec.stage)  # stage 3 is the tail of stage 2's Job, not a Job of its own
    while True:
        stage = int(status.get("stage") or 1)
        k8s_job = _ensure_children(ctx, body, job, stage)
        if k8s_job is None:
            return status  # a foreign object holds a child's name; reported, retried on the next pass
        pods = ctx.kube.list_pods(meta["namespace"], children.selector(meta["name"], stage))
        outcome = st.observe_stage(k8s_job, pods)

        if outcome.state == "failed":
            if outcome.reason in st.NEVER_STARTS:
                # such a pod waits forever: stop the Job so it stops holding nodes
                _set_suspend(ctx, k8s_job, True)
            return _fail(ctx, body, status, outcome.reason, f"stage {stage}: {outcome.message}", generation)

        if outcome.state == "succeeded":
            status = st.apply_summary(status, outcome.summary)
            duration = outcome.duration_s
            if duration is None:
                start = st.parse_time(status.get("stageStartTime"))
                end = st.parse_time(st.now())
                duration = (end - start).total_seconds() if start and end else None
            if duration is not None:
                metrics.STAGE_DURATION.labels(str(stage)).observe(max(0.0, duration))
            if outcome.reason == "NoSummary":
                ctx.event(body, "Warning", "NoSummary", f"stage {stage}: {outcome.message}")
            ctx.event(body, "Normal", f"Stage{stage}Succeeded", st.stage_message(stage, outcome.summary))
            if stage < stages[-1]:
                status.update(stage=stage + 1, stageStartTime=st.now())
                continue  # on to the next stage's children in this same pass
            status = st.succeeded(status, generation)
            metrics.JOBS_SUCCEEDED.inc()
            ctx.event(body, "Normal", "Succeeded", status["message"])
            return status

        # running, pending or suspended: make the Job follow spec.suspend
        if bool((k8s_job.get("spec") or {}).get("suspend")) != job.spec.suspend:
            _set_suspend(ctx, k8s_job, job.spec.suspend)
        return _running(ctx, body, status, job, stage, outcome, generation)


def _ensure_children(ctx: Context, body: dict, job: spec_mod.CompressionJob, stage: int) -> dict | None:
    """The stage's Service, ConfigMap and Job, created if missing; the Job as it is now."""
    uid = body["metadata"].get("uid")
    k8s_job = None
    for child in children.build_children(body, job, stage, ctx.worker):
        obj, created = ctx.kube.create_or_get(child)
        owners = [o.get("uid") for o in (obj.get("metadata") or {}).get("ownerReferences") or [] if o.get("controller")]
        if not created and uid not in owners:
            ctx.event(
                body,
                "Warning",
                "NameTaken",
                f"{child['kind']} {child['metadata']['name']} exists and belongs to someone else; waiting for it to go",
            )
            return None
        if created:
            ctx.event(
                body,
                "Normal",
                f"{child['kind']}Created",
                f"stage {stage}: created {child['kind']} {child['metadata']['name']}",
            )
        if child["kind"] == "Job":
            k8s_job = obj
    return k8s_job


def _set_suspend(ctx: Context, k8s_job: dict, suspend: bool) -> None:
    meta = k8s_job["metadata"]
    ctx.kube.set_job_suspend(meta["namespace"], meta["name"], suspend)
    k8s_job.setdefault("spec", {})["suspend"] = suspend


def _running(
    ctx: Context,
    body: dict,
    status: dict,
    job: spec_mod.CompressionJob,
    stage: int,
    outcome: st.StageOutcome,
    generation: int,
) -> dict:
    """Suspended, running or still pending: the phase, its condition, an Event when the phase changes."""
    before = status.get("phase")
    conds = status.get("conditions") or []
    if job.spec.suspend:
        message = f"stage {stage} suspended (spec.suspend); set it to false to resume"
        conds = st.set_condition(conds, "Suspended", True, "Suspended", message, generation)
        if st.condition(conds, "Running"):
            conds = st.set_condition(conds, "Running", False, "Suspended", message, generation)
        status.update(
            phase=st.SUSPENDED, stage=stage, reason=f"Stage{stage}Suspended", message=message, conditions=conds
        )
    else:
        if st.condition(conds, "Suspended"):
            conds = st.set_condition(conds, "Suspended", False, "Resumed", "spec.suspend is false", generation)
        status["conditions"] = conds
        # a stage after the first, or one that ran before a suspension, counts as started without active pods
        if outcome.state == "running" or stage > 1 or before in (st.RUNNING, st.SUSPENDED):
            status = st.running(status, stage, job.spec, generation)
        else:
            status.update(
                phase=st.PENDING,
                stage=stage,
                reason=f"Stage{stage}Pending",
                message=f"stage {stage}: waiting for {job.spec.workers} worker pod(s) to start",
            )
    if status["phase"] != before:
        ctx.event(body, "Normal", status["phase"], status["message"])
    return status


def _fail(ctx: Context, body: dict, status: dict, reason: str, message: str, generation: int) -> dict:
    status = st.failed(status, reason, message, generation)
    metrics.failed(reason)
    ctx.event(body, "Warning", reason, message)
    return status
