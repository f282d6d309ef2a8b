"""One pass over one CompressionJob: read the world, move the status one step, write it back.

Level-triggered: every trigger (the CompressionJob created or resumed, spec.suspend changed, a
child Job or Pod changed) runs the same pass, which derives everything from the API server:
the status says which stage is current, the children are found by their deterministic names,
rank 0's termination message says how a stage ended. Nothing lives only in this process, so a
restarted operator picks up where the last one stopped without creating anything twice.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kondense.job import spec as spec_mod
from kondense.job.spec import parse_for_kubernetes  # re-exported: the operator's validation lives there

from . import children, kueue, metrics, mpijob, progress, refusals, resources, restarts
from . import status as st
from .config import DEFAULT_FORBIDDEN_RETRY_S, WorkerConfig
from .kube import ApiError, Kube

log = logging.getLogger(__name__)

# Event(body, type, reason, message): kopf.event in the operator, a list in tests
EventSink = Callable[[dict, str, str, str], None]
NAME_TAKEN = "NameTaken"  # status reason, condition type and Event reason: a child's name is someone else's

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
    forbidden_retry_s: float = DEFAULT_FORBIDDEN_RETRY_S  # how long a 403 waits before the next try


class Forbidden(Exception):
    """The pass was refused a right (403) and wrote condition Forbidden; the handler retries it
    after `delay` seconds (an admin may grant the right meanwhile)."""

    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


class _NameTaken(Exception):
    """A child's name is held by an object that is not this CompressionJob's (typically a child of a
    deleted CompressionJob of the same name, still going); the message says which and whose."""


class _Interrupted(Exception):
    """A pass stopped by an API error after it had moved the status: `status` is written first,
    then `cause` is raised, so that the next try does not count (or announce) the same step again."""

    def __init__(self, status: dict, cause: Exception):
        super().__init__(str(cause))
        self.status = status
        self.cause = cause


def reconcile(ctx: Context, namespace: str, name: str) -> dict | None:
    """Run one pass; returns the status written (or found), None if the object is gone."""
    with _lock(namespace, name):
        body = ctx.kube.get_cj(namespace, name)
        if body is None:
            return None
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return None  # the garbage collector removes the children through their owner references
        old = body.get("status") or {}
        try:
            new = _step(ctx, body, copy.deepcopy(old))
        except _Interrupted as stop:
            _write_status(ctx, namespace, name, old, stop.status)
            _record_info(body, stop.status)
            raise stop.cause from None
        progress.settle(namespace, name, new)  # a finished job's progress gauge goes
        _write_status(ctx, namespace, name, old, new)
        _record_info(body, new)
        return new


def _write_status(ctx: Context, namespace: str, name: str, old: dict, new: dict) -> None:
    if new != old:
        ctx.kube.patch_cj_status(namespace, name, _merge_patch(old, new))


def _merge_patch(old: dict, new: dict) -> dict:
    """`new` as a JSON merge patch over `old`: keys that disappeared must be nulled explicitly, in
    nested objects too (a status.progress line without etaSeconds must not keep the last one's)."""
    patch = dict(new)
    for key, value in old.items():
        if key not in new:
            patch[key] = None
        elif isinstance(value, dict) and isinstance(new[key], dict):
            patch[key] = _merge_patch(value, new[key])
    return patch


def _record_info(body: dict, new: dict) -> None:
    """kondense_job_info: the job's backend, stage and phase as last written."""
    meta = body["metadata"]
    backend = str((body.get("spec") or {}).get("backend") or spec_mod.DEFAULTS["backend"])
    metrics.JOB_INFO.set(
        meta.get("uid") or f"{meta['namespace']}/{meta['name']}",
        backend,
        int(new.get("stage") or 0),
        str(new.get("phase") or st.PENDING),
    )


def _step(ctx: Context, body: dict, status: dict) -> dict:
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    phase = status.get("phase")
    if phase in st.TERMINAL:
        # nothing moves a finished job; a later change (only spec.suspend is mutable) is still seen
        status["observedGeneration"] = generation
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

    return _clear_forbidden(ctx, body, _advance(ctx, body, job, status, generation), generation)


def _advance(ctx: Context, body: dict, job: spec_mod.CompressionJob, status: dict, generation: int) -> dict:
    """The current stage's children, then how it stands; on to the next stage where it succeeded."""
    meta = body["metadata"]
    stages = spec_mod.job_stages(job.spec.stage)  # stage 3 is the tail of stage 2's Job, not a Job of its own
    if job.spec.backend == "mpi" and not ctx.worker.mpi_enabled:
        # final, like an invalid spec: the switch is the admin's, and backend is immutable
        return _fail(ctx, body, status, mpijob.DISABLED, mpijob.disabled_message(), generation)
    invalid = resources.invalid(job, ctx.worker)  # before any child: the API server would refuse its pods
    if invalid:
        return _fail(ctx, body, status, resources.INVALID, invalid, generation)
    while True:
        stage = int(status.get("stage") or 1)
        try:
            attempt = restarts.restarts_of(status)  # which of the stage's Jobs is current (children.job_name)
            k8s_job = _ensure_children(ctx, body, job, stage, attempt)  # the stage's Job, or its MPIJob
            status = _name_free(status, generation)
            pods = ctx.kube.list_pods(meta["namespace"], children.selector(meta["name"], stage))
            pods = children.of_attempt(pods, attempt)  # an earlier, lost Job's pods are history
            outcome = st.observe(k8s_job, pods)

            if outcome.state == "failed":
                decision = restarts.decide(k8s_job, pods, outcome, job.spec, attempt)
                if decision.action == restarts.RESTART:
                    status = _restart(ctx, body, status, k8s_job, stage, decision, job.spec.max_restarts)
                    continue  # the stage's next Job, in this same pass
                if decision.action == restarts.FAIL:
                    if decision.reason in st.NEVER_STARTS:
                        # such a pod waits forever: stop the Job so it stops holding nodes
                        _set_suspend(ctx, k8s_job, True)
                    return _fail(ctx, body, status, decision.reason, f"stage {stage}: {decision.message}", generation)
                outcome = st.StageOutcome("running")  # WAIT: the Job's controller has not stopped the attempt yet

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

            if kueue.managed(job.spec):
                # Kueue owns the suspension: never patched here; suspended means not admitted (yet, or again)
                if mpijob.suspended(k8s_job):
                    return _waiting_for_admission(ctx, body, status, stage, k8s_job, generation)
            # running, pending or suspended: make the Job (or MPIJob) follow spec.suspend
            elif mpijob.suspended(k8s_job) != job.spec.suspend:
                _set_suspend(ctx, k8s_job, job.spec.suspend)
            status = _running(ctx, body, status, job, stage, outcome, generation)
            if status.get("phase") == st.RUNNING:
                progress.follow(ctx.kube, body, status, stage, pods)  # status.progress: rank 0's last line
            return status
        except _NameTaken as taken:
            # looked at again on the next event or re-check (--recheck-seconds): the old child's
            # Service or ConfigMap going sends no event the operator watches
            return _name_taken(ctx, body, status, stage, str(taken), generation)
        except ApiError as e:
            # `status` is this pass's so far (a stage may have finished before the refusal)
            return _refused(ctx, body, status, stage, e, generation)


def _ensure_children(ctx: Context, body: dict, job: spec_mod.CompressionJob, stage: int, attempt: int = 0) -> dict:
    """The stage's Service, ConfigMap and Job (backend mpi: ConfigMap and MPIJob), created if
    missing; the Job (or MPIJob) as it is now. _NameTaken where a name is someone else's.
    `attempt` (status.restarts) names the Job (children.job_name)."""
    uid = body["metadata"].get("uid")
    k8s_job = None
    build = mpijob.build_children if job.spec.backend == "mpi" else children.build_children
    for child in build(body, job, stage, ctx.worker, attempt):
        with _about(child["kind"], child["metadata"]["name"]):
            obj, created = ctx.kube.create_or_get(child)
        owners = [o.get("uid") for o in (obj.get("metadata") or {}).get("ownerReferences") or [] if o.get("controller")]
        if not created and uid not in owners:
            raise _NameTaken(f"stage {stage}: {child['kind']} {child['metadata']['name']} {_whose(obj)}")
        if created:
            ctx.event(
                body,
                "Normal",
                f"{child['kind']}Created",
                f"stage {stage}: created {child['kind']} {child['metadata']['name']}",
            )
        if child["kind"] in ("Job", mpijob.KIND):
            k8s_job = obj
    return k8s_job


def _whose(obj: dict) -> str:
    """Whose a child found under one of this job's names is, and what frees the name."""
    ref = next((r for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if r.get("controller")), None)
    owner = f"{ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})" if ref else "no CompressionJob"
    return f"exists and belongs to {owner}, not to this CompressionJob; waiting for it to be deleted"


def _name_taken(ctx: Context, body: dict, status: dict, stage: int, message: str, generation: int) -> dict:
    """Phase Pending, reason and condition NameTaken; the Event when it turns True (or names another
    child), not on every pass that finds the name still taken."""
    before = st.condition(status.get("conditions"), NAME_TAKEN) or {}
    changed = before.get("status") != "True" or before.get("message") != message
    conds = st.set_condition(status.get("conditions") or [], NAME_TAKEN, True, NAME_TAKEN, message, generation)
    if (st.condition(conds, "Running") or {}).get("status") == "True":
        conds = st.set_condition(conds, "Running", False, NAME_TAKEN, message, generation)
    status.update(phase=st.PENDING, stage=stage, reason=NAME_TAKEN, message=message, conditions=conds)
    if changed:
        ctx.event(body, "Warning", NAME_TAKEN, message)
    return status


def _name_free(status: dict, generation: int) -> dict:
    """Condition NameTaken False once the stage's children are this job's own (where it was True)."""
    cond = st.condition(status.get("conditions"), NAME_TAKEN)
    if cond and cond.get("status") == "True":
        message = "the children's names are free: this job's own children exist"
        status["conditions"] = st.set_condition(
            status["conditions"], NAME_TAKEN, False, "NameFree", message, generation
        )
    return status


@contextmanager
def _about(kind: str, name: str) -> Iterator[None]:
    """Names the child in an API error raised within, so that a refusal says which child it was."""
    try:
        yield
    except ApiError as e:
        e.subject = e.subject or f"{kind} {name}"
        raise


def _refused(ctx: Context, body: dict, status: dict, stage: int, error: ApiError, generation: int) -> dict:
    """An API error during a pass. 422: the child is invalid, the job fails (the same spec builds the
    same child, so a retry cannot help). 403: condition Forbidden, then a slow retry (an admin may
    grant the right). Anything else: the status so far is written, and kopf retries as for any error."""
    meta = body["metadata"]
    where = f"{meta['namespace']}/{meta['name']}"
    if refusals.mpijob_crd_missing(error):
        # the MPI operator is not installed (or serves no v2beta1): retrying cannot install it
        log.warning("CompressionJob %s: %s", where, error)
        return _fail(
            ctx, body, status, mpijob.CRD_MISSING, mpijob.crd_missing_message(stage, meta["namespace"]), generation
        )
    if error.status == refusals.INVALID:
        log.warning("CompressionJob %s: %s refused (422): %s", where, error.subject or "a child", error.message)
        metrics.CHILD_REFUSALS.labels(str(error.status)).inc()
        message = refusals.invalid_message(stage, error.subject, error)
        return _fail(ctx, body, status, refusals.INVALID_CHILD, message, generation)
    if error.status == refusals.FORBIDDEN:
        message = refusals.forbidden_message(error, ctx.forbidden_retry_s)
        log.warning("CompressionJob %s: %s", where, message)
        status = _set_forbidden(ctx, body, status, message, generation)
        raise _Interrupted(status, Forbidden(message, ctx.forbidden_retry_s))
    raise _Interrupted(status, error)


def _set_forbidden(ctx: Context, body: dict, status: dict, message: str, generation: int) -> dict:
    """Condition Forbidden True with what to grant; the Event and the count only when it turns True
    (or names another right), not on every retry."""
    before = st.condition(status.get("conditions"), refusals.FORBIDDEN_REASON) or {}
    # the message ends with the server's text; the right to grant is what tells two refusals apart
    changed = before.get("status") != "True" or before.get("message") != message
    conds = st.set_condition(
        status.get("conditions") or [], refusals.FORBIDDEN_REASON, True, refusals.FORBIDDEN_REASON, message, generation
    )
    status.update(reason=refusals.FORBIDDEN_REASON, message=message, conditions=conds)
    if changed:
        metrics.CHILD_REFUSALS.labels(str(refusals.FORBIDDEN)).inc()
        ctx.event(body, "Warning", refusals.FORBIDDEN_REASON, message)
    return status


def _clear_forbidden(ctx: Context, body: dict, status: dict, generation: int) -> dict:
    """A pass that got through: a Forbidden condition turns False, once, with a Normal Event."""
    cond = st.condition(status.get("conditions"), refusals.FORBIDDEN_REASON)
    if not cond or cond.get("status") != "True":
        return status
    message = "the operator's requests are allowed again"
    status["conditions"] = st.set_condition(
        status["conditions"], refusals.FORBIDDEN_REASON, False, "Allowed", message, generation
    )
    if status.get("reason") == refusals.FORBIDDEN_REASON:  # nothing else has said where the job stands since
        status.update(reason=f"Stage{status.get('stage') or 1}Pending", message=message)
    ctx.event(body, "Normal", "Allowed", message)
    return status


def _set_suspend(ctx: Context, k8s_job: dict, suspend: bool) -> None:
    """A stage's Job follows spec.suspend through its spec.suspend, an MPIJob through spec.runPolicy.suspend."""
    meta, kind = k8s_job["metadata"], k8s_job.get("kind") or "Job"
    with _about(kind, meta["name"]):
        ctx.kube.set_suspend(kind, meta["namespace"], meta["name"], suspend)
    spec = k8s_job.setdefault("spec", {})
    if kind == mpijob.KIND:
        spec.setdefault("runPolicy", {})["suspend"] = suspend
    else:
        spec["suspend"] = suspend


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
        if outcome.reason == st.UNSCHEDULABLE:
            # not a failure (the cluster may scale up), and not Running; the Event once, when it turns True
            if (st.condition(conds, st.UNSCHEDULABLE) or {}).get("status") != "True":
                ctx.event(body, "Warning", st.UNSCHEDULABLE, f"stage {stage}: {outcome.message}")
        else:
            conds = st.scheduled(conds, generation)
        status["conditions"] = conds
        if outcome.reason == st.UNSCHEDULABLE:
            status = st.waiting_for_nodes(status, stage, outcome.message, generation)
        # a stage after the first, or one that ran before a suspension, counts as started without active pods
        elif outcome.state == "running" or stage > 1 or before in (st.RUNNING, st.SUSPENDED):
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


def _restart(
    ctx: Context, body: dict, status: dict, lost_job: dict, stage: int, decision: restarts.Decision, budget: int
) -> dict:
    """The stage's pods were lost: count it in status.restarts, written at once (the count names the
    next Job, so a restarted operator neither counts this loss again nor makes a second Job for it),
    then the Event and the metric, then the lost Job goes (its pods have stopped: restarts.decide
    waits for that); the caller creates the next Job, which resumes from the stage's checkpoint."""
    meta = body["metadata"]
    count = restarts.restarts_of(status) + 1
    message = (
        f"stage {stage}: {decision.message}; re-created from its checkpoint "
        f"(restart {count} of spec.maxRestarts {budget})"
    )
    patch = {"restarts": count, "reason": f"Stage{stage}Restarted", "message": message}
    ctx.kube.patch_cj_status(meta["namespace"], meta["name"], patch)  # an error here: nothing counted yet
    status.update(patch)
    metrics.STAGE_RESTARTS.labels(decision.reason if decision.reason in restarts.REASONS else "Other").inc()
    ctx.event(body, "Warning", "Restarted", message)
    lost = lost_job["metadata"]
    try:
        ctx.kube.delete(lost_job.get("kind") or "Job", lost["namespace"], lost["name"])
    except ApiError as e:
        # harmless where it stays: finished, its pods stopped, and removed with the CompressionJob
        if e.status != 404:
            log.warning("CompressionJob %s/%s: the lost %s stays: %s", meta["namespace"], meta["name"], lost["name"], e)
    return status


def _waiting_for_admission(ctx: Context, body: dict, status: dict, stage: int, k8s_job: dict, generation: int) -> dict:
    """Phase Pending while Kueue holds the stage's Job suspended (not admitted yet, or preempted:
    condition Running then turns False); an Event when it starts waiting."""
    kind, name = k8s_job.get("kind") or "Job", k8s_job["metadata"]["name"]
    message = kueue.waiting_message(body, stage, kind, name)
    before = (status.get("phase"), status.get("reason"))
    if (st.condition(status.get("conditions"), "Running") or {}).get("status") == "True":
        status["conditions"] = st.set_condition(
            status["conditions"], "Running", False, kueue.WAITING, message, generation
        )
    status.update(phase=st.PENDING, stage=stage, reason=kueue.WAITING, message=message)
    if before != (st.PENDING, kueue.WAITING):
        ctx.event(body, "Normal", kueue.WAITING, message)
    return status


def _fail(ctx: Context, body: dict, status: dict, reason: str, message: str, generation: int) -> dict:
    status = st.failed(status, reason, message, generation)
    metrics.failed(reason)
    ctx.event(body, "Warning", reason, message)
    return status
