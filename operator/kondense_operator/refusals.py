"""What the API server's refusal of a child means for the CompressionJob: pure wording, no API calls.

422 Unprocessable Entity: the child as built is invalid (a request above its limit, a bad
quantity, a field the server rejects). The same spec builds the same child on every pass, so
retrying cannot help: the job fails, and the message names the child and, from the server's
Status body (details.causes), each field and what is wrong with it.

404 Not Found on creating an MPIJob (backend mpi): the API server serves no kubeflow.org/v2beta1
mpijobs, i.e. the MPI operator v2 is not installed. Retrying cannot install it: the job fails with
reason MPIJobCRDMissing (kondense_operator.mpijob words it). A 404 elsewhere is a race, retried.

403 Forbidden: the operator's service account lacks a right. An admin can grant it without
touching the CompressionJob, so the job is not failed: it gets condition Forbidden naming the
verb, resource and namespace to grant, and the pass is retried slowly (docs/operator.md).
"""

from __future__ import annotations

from .kube import MPI_GROUP, MPI_PLURAL, MPI_VERSION, ApiError, request_attributes

INVALID = 422
FORBIDDEN = 403
INVALID_CHILD = "InvalidChild"  # the status reason and Event reason of a 422
FORBIDDEN_REASON = "Forbidden"  # the condition type, status reason and Event reason of a 403
FORBIDDEN_MARK = "(403 Forbidden)"  # in every 403 message: how the handlers tell a 403's retry apart
MESSAGE_LIMIT = 1024  # an Event's message is cut there too


def _causes(error: ApiError) -> str:
    """'FIELD: message; ...' from details.causes; the server's own message where it gave none."""
    parts = []
    for cause in error.causes:
        text = str(cause.get("message") or cause.get("reason") or "").strip()
        field = str(cause.get("field") or "").strip()
        if text or field:
            parts.append(f"{field}: {text}" if field and text else field or text)
    return "; ".join(parts) or error.message


def invalid_message(stage: int, child: str, error: ApiError) -> str:
    """e.g. 'stage 1: the API server refused Job x-s1 (422 Invalid): spec...requests: Invalid value: ...'"""
    subject = child or "a child"
    text = f"stage {stage}: the API server refused {subject} (422 {error.reason or 'Invalid'}): {_causes(error)}"
    return text[:MESSAGE_LIMIT]


def forbidden_message(error: ApiError, retry_s: float) -> str:
    """e.g. 'the operator may not create jobs.batch in namespace team-a (403 Forbidden); ...'"""
    verb, resource, namespace = request_attributes(error.method, error.path)
    where = f"in namespace {namespace}" if namespace else "cluster-wide"
    text = (
        f"the operator may not {verb} {resource} {where} {FORBIDDEN_MARK}: grant it to the operator's "
        f"service account (its Role, see rbac.py); retried every {retry_s:g}s. Server: {error.message}"
    )
    return text[:MESSAGE_LIMIT]


def mpijob_crd_missing(error: ApiError) -> bool:
    """A 404 on creating an MPIJob: no such resource (a namespace that holds the CompressionJob exists)."""
    collection = f"/apis/{MPI_GROUP}/{MPI_VERSION}/namespaces/"
    path = error.path.split("?", 1)[0]
    return (
        error.status == 404
        and error.method.upper() == "POST"
        and path.startswith(collection)
        and path.endswith("/" + MPI_PLURAL)
    )
