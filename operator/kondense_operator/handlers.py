"""kopf handlers, in lifecycle order. Each one only says *when* to look again at a
CompressionJob; what to do is reconcile.reconcile's one level-triggered pass.

  created / resumed (operator start)  -> validate, initialise status, stage 1's children
  spec.suspend changed                 -> suspend or resume the running stage's Job
  a child Job or Pod changed           -> read how the stage stands; next stage, success or failure
  deleted                              -> nothing to do: owner references take the children along

Handlers are sync (run in kopf's thread pool) because the kubernetes client is; no handler
needs a finalizer (no on.delete, no timers or daemons), so deleting never waits on the operator.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import kube as kube_mod
from . import metrics
from .config import OperatorConfig
from .reconcile import Context, reconcile

GROUP, VERSION, PLURAL = kube_mod.GROUP, kube_mod.VERSION, kube_mod.PLURAL
CHILD_LABELS = {"app.kubernetes.io/name": "kondense", "app.kubernetes.io/managed-by": "kondense-operator"}


def _post_event(body: dict, type_: str, reason: str, message: str) -> None:
    ref = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": body.get("metadata")}
    (kopf.warn if type_ == "Warning" else kopf.info)(ref, reason=reason, message=message[:1024])


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
    settings.watching.server_timeout = 300  # re-list now and then: a missed event is caught up
    memo.context = Context(kube=kube_mod.Kube(kube_mod.load_config()), worker=cfg.worker, event=_post_event)
    logger.info(
        "kondense operator: worker image %s, %s",
        cfg.worker.image,
        "all namespaces" if cfg.clusterwide else "namespaces " + ", ".join(cfg.namespaces),
    )


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=5)
def created(namespace: str, name: str, memo: Any, **_: Any) -> None:
    reconcile(_context(memo), namespace, name)


@kopf.on.field(GROUP, VERSION, PLURAL, field="spec.suspend", backoff=5)
def suspend_changed(namespace: str, name: str, memo: Any, **_: Any) -> None:
    reconcile(_context(memo), namespace, name)


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
        reconcile(_context(memo), body.metadata.namespace, owner)


@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
def pod_event(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    # pods are owned by their Job; the CompressionJob is named in their annotation
    owner = (body.metadata.get("annotations") or {}).get("kondense.dev/compressionjob")
    if owner and type != "DELETED":
        reconcile(_context(memo), body.metadata.namespace, owner)
