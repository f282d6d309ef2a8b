"""A deleted CompressionJob's children, deleted by the operator before its finalizer comes off.

Owner references alone would let the garbage collector take them, but only after the
CompressionJob is gone: a CompressionJob re-created under the same name would then find its
children's names held by the old ones. Deleting them first, and holding the finalizer until
they are gone, means the name is free for a new job the moment the old one disappears.
"""

from __future__ import annotations

from kondense.job import spec as spec_mod

from . import children, mpijob
from .kube import ApiError, Kube

# every stage that can have children of its own (stage 3 runs inside stage 2's Job)
_STAGES = spec_mod.job_stages(3)


def stage_objects(name: str) -> list[tuple[str, str]]:
    """(kind, name) of the Services and ConfigMaps a CompressionJob `name` can have, one of each
    per stage, whatever its spec (an invalid spec has none, which a 404 says)."""
    return [(kind, children.child_name(name, stage)) for stage in _STAGES for kind in ("Service", "ConfigMap")]


def run_kinds(mpi_enabled: bool) -> list[str]:
    """The kinds that run a stage: Jobs, and MPIJobs where backend mpi is enabled (otherwise the
    operator neither makes them nor has rights on them). Found by label, not by name: a restarted
    stage has one per attempt (children.job_name)."""
    return ["Job"] + ([mpijob.KIND] if mpi_enabled else [])


def _owned_by(obj: dict, uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _present(kube: Kube, body: dict, mpi_enabled: bool) -> list[dict]:
    """The children of `body` that exist now (an object of someone else under one of the names is
    not one of them)."""
    meta = body["metadata"]
    namespace, uid = meta["namespace"], meta.get("uid") or ""
    found = []
    for kind in run_kinds(mpi_enabled):
        try:
            listed = kube.list_labelled(kind, namespace, {children.LABEL_JOB: children.label_value(meta["name"])})
            found += [{**obj, "kind": kind} for obj in listed]  # a list's items need not say their kind
        except ApiError as e:
            if e.status != 404:  # 404: the resource is not served (no MPI operator), so there are none
                raise
    for kind, name in stage_objects(meta["name"]):
        obj = kube.get(kind, namespace, name)
        if obj is not None:
            found.append({**obj, "kind": kind})
    return [obj for obj in found if _owned_by(obj, uid)]


def delete_children(kube: Kube, body: dict, mpi_enabled: bool) -> list[str]:
    """Asks for every child of `body` still there to be deleted; returns those still there
    ("Job x-s1", ...), empty once all are gone. Deletion is asked for once per child (one that has
    its deletionTimestamp is only waited for). Jobs go with propagationPolicy Background: without
    it the API deletes a batch/v1 Job and orphans its pods."""
    namespace = body["metadata"]["namespace"]
    remaining = []
    for obj in _present(kube, body, mpi_enabled):
        kind, name = obj["kind"], obj["metadata"]["name"]
        if not obj["metadata"].get("deletionTimestamp"):
            try:
                kube.delete(kind, namespace, name)
            except ApiError as e:
                if e.status != 404:
                    raise
                continue  # gone between the read and the delete
        remaining.append(f"{kind} {name}")
    return remaining
