"""kopf handlers, in lifecycle order. Each one only says *when* to look again at a
CompressionJob; what to do is reconcile.reconcile's one level-triggered pass.

  created / resumed (operator start)  -> validate, initialise status, stage 1's children
  spec.suspend changed                 -> suspend or resume the running stage's Job
  a child Job or Pod changed / deleted -> read how the stage stands; next stage, success or failure;
                                          a stage Job deleted by hand is created again
  a child MPIJob changed (backend mpi) -> the same; watched only with the worker config's mpiJob.enabled
  every --recheck-seconds, unfinished  -> the same pass, whatever the watch events said (recheck_every)
  deleted                              -> delete the children, wait until they are gone, then let go

Handlers are sync (run in kopf's thread pool) because the kubernetes client is. The re-check timer
and the on.delete handler make kopf put its finalizer (settings.persistence.finalizer) on every
CompressionJob: deleting one waits until its children are gone, so that a job re-created under the
same name finds their names free. With the operator down, a deletion waits for it (or for an admin
who removes the finalizer; the garbage collector then takes the children by their owner references).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import kopf

from . import cleanup, metrics, progress, refusals
from . import kube as kube_mod
from .config import OperatorConfig
from .reconcile import Context, Forbidden, reconcile
from .status import TERMINAL

GROUP, VERSION, PLURAL = kube_mod.GROUP, kube_mod.VERSION, kube_mod.PLURAL
CHILD_LABELS = {"app.kubernetes.io/name": "kondense", "app.kubernetes.io/managed-by": "kondense-operator"}
# the children's label selector, as the API server filters watches and lists by it
CHILD_SELECTOR = ",".join(f"{key}={value}" for key, value in sorted(CHILD_LABELS.items()))
# the resources whose watches carry CHILD_SELECTOR: kopf's settings key them as the handlers do
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("batch", "v1", "jobs"),
    ("", "v1", "pods"),
    (kube_mod.MPI_GROUP, kube_mod.MPI_VERSION, kube_mod.MPI_PLURAL),
)
# objects per page of kopf's initial lists (and re-lists after a 410 Gone): a namespace with
# thousands of pods is then read in pages, not as one response held whole in both processes
LIST_CHUNK_SIZE = 500


def peering_priority(now_ns: int | None = None) -> int:
    """This process's kopf peering priority: the older a process, the higher. kopf pauses every
    peer that sees a live peer of higher priority, and pauses ALL peers (itself included) while two
    of equal priority are alive, so equal priorities would freeze every replica. The start time in
    milliseconds, negated, makes the oldest replica the one that acts: a replica started by a
    rollout stands by until the old one has gone (which, on SIGTERM, withdraws its keep-alive at
    once) instead of taking over from a process that is still mid-pass. Three random digits below
    the milliseconds keep two replicas started in the same millisecond apart (999 times in 1000).
    About 1.8e15 in magnitude: within 2**53, the integers every JSON reader keeps exact."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    return -(millis * 1000 + random.randrange(1000))


def ensure_peering_objects(kube: kube_mod.Kube, name: str, namespaces: tuple[str, ...], logger: logging.Logger) -> None:
    """Create the peering object(s) --peering names, where missing: one ClusterKopfPeering (no
    namespaces: --all-namespaces), else a KopfPeering in every watched namespace. kopf only patches
    them, and stays paused while one is missing (peering mandatory); the chart installs their CRDs
    but cannot install the objects beside them, since Helm refuses an object whose CRD the same
    release creates. A 409 is another replica that got there first."""
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
    targets = (
        [("/apis/kopf.dev/v1/clusterkopfpeerings", {**body, "kind": "ClusterKopfPeering"})]
        if not namespaces
        else [(f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings", {**body, "kind": "KopfPeering"}) for ns in namespaces]
    )
    for path, obj in targets:
        try:
            kube.request("POST", path, body=obj)
        except kube_mod.ApiError as e:
            if e.status != 409:
                # kopf then stays paused (peering mandatory), which this line explains
                logger.error("cannot create the peering object %s at %s (the operator stays paused): %s", name, path, e)


def _post_event(body: dict, type_: str, reason: str, message: str) -> None:
    ref = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": body.get("metadata")}
    (kopf.warn if type_ == "Warning" else kopf.info)(ref, reason=reason, message=message[:1024])


class _ForbiddenNotPosted(logging.Filter):
    """kopf logs "... failed temporarily: <error>" on every retry and posts that line as an Event.
    For a 403 the condition Forbidden and its one Warning Event already say it, so the line stays
    in the operator's log but is not posted again and again (kopf's k8s_skip)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "failed temporarily" in text and refusals.FORBIDDEN_MARK in text:
            record.k8s_skip = True
        return True


def _context(memo: Any) -> Context:
    return memo.context


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: Any, logger: logging.Logger, **_: Any) -> None:
    cfg: OperatorConfig = memo.config if hasattr(memo, "config") else OperatorConfig()
    # no scanning of CRDs or namespaces: the RBAC in rbac.py is all it needs
    settings.scanning.disabled = True
    # standalone unless --peering: then the peering object's name must exist (mandatory: kopf
    # stays paused while it is missing rather than run beside other replicas unseen), one per
    # watched namespace or one cluster-wide, as the watch scope is
    settings.peering.standalone = cfg.peering is None
    settings.peering.clusterwide = cfg.clusterwide
    if cfg.peering is not None:
        settings.peering.name = cfg.peering
        settings.peering.mandatory = True
        settings.peering.priority = peering_priority()
        settings.peering.lifetime = cfg.peering_lifetime_s
    # Filtered on the API server: kopf's labels= on the handlers below is checked in the client,
    # after every pod and Job of the watched namespaces was sent; with these selectors the server
    # sends the children only (the handlers keep labels= as a guard). Lists come in pages.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = CHILD_SELECTOR
    settings.watching.chunk_size = LIST_CHUNK_SIZE
    # kopf's bookkeeping in annotations, never in the status (whose schema is the user's view)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kondense.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kondense.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    logging.getLogger("kopf.objects").addFilter(_ForbiddenNotPosted())
    # Each watch request ends after 300 s and kopf resumes it from the last resourceVersion: that
    # is no re-list (kopf lists again only after a 410 Gone or a restart, and only then do the event
    # handlers see every object, with type None). What a missed event leaves undone, the
    # re-check timer (recheck_every) picks up.
    settings.watching.server_timeout = 300
    kube = kube_mod.Kube(kube_mod.load_config())
    if cfg.peering is not None:
        ensure_peering_objects(kube, cfg.peering, cfg.namespaces, logger)
    memo.context = Context(
        kube=kube,
        worker=cfg.worker,
        event=_post_event,
        forbidden_retry_s=cfg.forbidden_retry_s,
    )
    logger.info(
        "kondense operator: worker image %s, %s; backend mpi %s; %s",
        cfg.worker.image,
        "all namespaces" if cfg.clusterwide else "namespaces " + ", ".join(cfg.namespaces),
        "as Kubeflow MPIJobs" if cfg.worker.mpi_enabled else "off (worker config mpiJob.enabled)",
        "standalone"
        if cfg.peering is None
        else f"peering in {cfg.peering!r} (priority {settings.peering.priority}, lifetime {cfg.peering_lifetime_s} s)",
    )


def _retrying(ctx: Context, namespace: str, name: str) -> None:
    """A pass from a handler that kopf retries: every 5 s (backoff) after most errors, but after
    `delay` for a 403, which waits on an admin and has already said so in condition Forbidden.
    A 422 fails the job inside the pass, so it never gets here."""
    try:
        reconcile(ctx, namespace, name)
    except Forbidden as e:
        raise kopf.TemporaryError(str(e), delay=e.delay) from None


def _once(ctx: Context, namespace: str, name: str, logger: logging.Logger) -> None:
    """A pass from an event handler or the re-check timer, which are not retried: the next event or
    re-check runs it again. A 403 is already in the status and the create/resume handler's slow
    retry; logging it again here would only repeat it. Other errors are logged here, naming the
    CompressionJob: kopf would log them under the Job's or Pod's name that triggered the pass."""
    try:
        reconcile(ctx, namespace, name)
    except Forbidden as e:
        logger.debug("CompressionJob %s/%s: %s", namespace, name, e)
    except kube_mod.ApiError as e:
        logger.warning(
            "CompressionJob %s/%s: pass interrupted, tried again on the next event or re-check: %s", namespace, name, e
        )
    except Exception:
        logger.exception("CompressionJob %s/%s: pass failed", namespace, name)


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=5)
def created(namespace: str, name: str, memo: Any, **_: Any) -> None:
    _retrying(_context(memo), namespace, name)


@kopf.on.field(GROUP, VERSION, PLURAL, field="spec.suspend", backoff=5)
def suspend_changed(namespace: str, name: str, memo: Any, **_: Any) -> None:
    _retrying(_context(memo), namespace, name)


@kopf.on.delete(GROUP, VERSION, PLURAL, backoff=5)
def deleted(body: kopf.Body, memo: Any, logger: logging.Logger, **_: Any) -> None:
    """The children go before the finalizer does. Deletion is asked for once per child; the handler
    then comes back every 2 s until they are gone (a Job goes once the Job controller let it go)."""
    ctx = _context(memo)
    try:
        remaining = cleanup.delete_children(ctx.kube, dict(body), ctx.worker.mpi_enabled)
    except kube_mod.ApiError as e:
        if e.status != refusals.FORBIDDEN:
            raise
        message = refusals.forbidden_message(e, ctx.forbidden_retry_s)
        raise kopf.TemporaryError(message, delay=ctx.forbidden_retry_s) from None
    if remaining:
        raise kopf.TemporaryError(f"waiting for {', '.join(remaining)} to go", delay=2)


def _unfinished(body: kopf.Body, **_: Any) -> bool:
    return (body.get("status") or {}).get("phase") not in TERMINAL


def recheck(namespace: str, name: str, memo: Any, logger: logging.Logger, **_: Any) -> None:
    _once(_context(memo), namespace, name, logger)


def recheck_every(seconds: float) -> None:
    """Look at every unfinished CompressionJob again every `seconds`, whatever the watch events said:
    a missed event, a child's name freed by an object the operator does not watch (a Service or
    ConfigMap), or a pass interrupted by an API error then costs at most `seconds`. Finished jobs
    (the `when` filter) are left alone. Called before kopf starts, with --recheck-seconds."""
    kopf.timer(GROUP, VERSION, PLURAL, id="recheck", interval=seconds, initial_delay=seconds, when=_unfinished)(recheck)


@kopf.on.event(GROUP, VERSION, PLURAL)
def cj_event(type: str, body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        metrics.JOB_INFO.forget(body.metadata.get("uid") or f"{body.metadata.namespace}/{body.metadata.name}")
        progress.forget(body.metadata.namespace, body.metadata.name)  # its progress gauge series


def _owner(body: kopf.Body) -> str | None:
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == "CompressionJob" and ref.get("controller"):
            return ref.get("name")
    return None


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS)
def job_event(type: str, body: kopf.Body, memo: Any, logger: logging.Logger, **_: Any) -> None:
    # DELETED counts: a stage's Job deleted by hand is created again by the pass
    owner = _owner(body)
    if owner:
        _once(_context(memo), body.metadata.namespace, owner, logger)


def mpijob_event(type: str, body: kopf.Body, memo: Any, logger: logging.Logger, **_: Any) -> None:
    owner = _owner(body)
    if owner:
        _once(_context(memo), body.metadata.namespace, owner, logger)


def watch_mpijobs() -> None:
    """Follow the stages' MPIJobs too (their conditions say when a backend-mpi stage ended). Called
    before kopf starts, only where the worker config enables backend mpi: the operator then needs
    the rights on mpijobs.kubeflow.org (rbac.MPIJOB_RULES). Without the MPI operator's CRD kopf logs
    that it cannot serve mpijobs and carries on; such jobs then fail with MPIJobCRDMissing."""
    kopf.on.event(kube_mod.MPI_GROUP, kube_mod.MPI_VERSION, kube_mod.MPI_PLURAL, labels=CHILD_LABELS)(mpijob_event)


@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
def pod_event(type: str, body: kopf.Body, memo: Any, logger: logging.Logger, **_: Any) -> None:
    # pods are owned by their Job; the CompressionJob is named in their annotation
    owner = (body.metadata.get("annotations") or {}).get("kondense.dev/compressionjob")
    if owner:
        _once(_context(memo), body.metadata.namespace, owner, logger)
