"""kopf handlers, in lifecycle order. Each one only says *when* to look again at a
CompressionJob; what to do is reconcile.reconcile's one level-triggered pass.

  created / resumed (operator start)  -> validate, initialise status, stage 1's children
  spec.suspend changed                 -> suspend or resume the running stage's Job
  a child Job or Pod changed           -> read how the stage stands; next stage, success or failure
  a child MPIJob changed (backend mpi) -> the same; watched only with the worker config's mpiJob.enabled
  deleted                              -> nothing to do: owner references take the children along

Handlers are sync (run in kopf's thread pool) because the kubernetes client is; no handler
needs a finalizer (no on.delete, no timers or daemons), so deleting never waits on the operator.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import kube as kube_mod
from . import metrics, refusals
from .config import OperatorConfig
from .reconcile import Context, Forbidden, reconcile

GROUP, VERSION, PLURAL = kube_mod.GROUP, kube_mod.VERSION, kube_mod.PLURAL
CHILD_LABELS = {"app.kubernetes.io/name": "kondense", "app.kubernetes.io/managed-by": "kondense-operator"}


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
    # standalone, and no scanning of CRDs or namespaces: the RBAC in rbac.py is all it needs
    settings.scanning.disabled = True
    settings.peering.standalone = True
    settings.peering.clusterwide = cfg.clusterwide
    # kopf's bookkeeping in annotations, never in the status (whose schema is the user's view)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kondense.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kondense.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    logging.getLogger("kopf.objects").addFilter(_ForbiddenNotPosted())
    settings.watching.server_timeout = 300  # re-list now and then: a missed event is caught up
    memo.context = Context(
        kube=kube_mod.Kube(kube_mod.load_config()),
        worker=cfg.worker,
        event=_post_event,
        forbidden_retry_s=cfg.forbidden_retry_s,
    )
    logger.info(
        "kondense operator: worker image %s, %s; backend mpi %s",
        cfg.worker.image,
        "all namespaces" if cfg.clusterwide else "namespaces " + ", ".join(cfg.namespaces),
        "as Kubeflow MPIJobs" if cfg.worker.mpi_enabled else "off (worker config mpiJob.enabled)",
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
    """A pass from an event handler, which kopf never retries: a 403 is already in the status and
    the create/resume handler's slow retry; logging it again here would only repeat it."""
    try:
        reconcile(ctx, namespace, name)
    except Forbidden as e:
        logger.debug("CompressionJob %s/%s: %s", namespace, name, e)


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=5)
def created(namespace: str, name: str, memo: Any, **_: Any) -> None:
    _retrying(_context(memo), namespace, name)


@kopf.on.field(GROUP, VERSION, PLURAL, field="spec.suspend", backoff=5)
def suspend_changed(namespace: str, name: str, memo: Any, **_: Any) -> None:
    _retrying(_context(memo), namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
def cj_event(type: str, body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        metrics.JOB_INFO.forget(body.metadata.get("uid") or f"{body.metadata.namespace}/{body.metadata.name}")


def _owner(body: kopf.Body) -> str | None:
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == "CompressionJob" and ref.get("controller"):
            return ref.get("name")
    return None


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS)
def job_event(type: str, body: kopf.Body, memo: Any, logger: logging.Logger, **_: Any) -> None:
    owner = _owner(body)
    if owner and type != "DELETED":
        _once(_context(memo), body.metadata.namespace, owner, logger)


def mpijob_event(type: str, body: kopf.Body, memo: Any, logger: logging.Logger, **_: Any) -> None:
    owner = _owner(body)
    if owner and type != "DELETED":
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
    if owner and type != "DELETED":
        _once(_context(memo), body.metadata.namespace, owner, logger)
