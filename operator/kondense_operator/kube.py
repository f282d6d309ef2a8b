"""The few Kubernetes API calls the operator makes, as plain JSON dicts.

The `kubernetes` client's models refuse objects that a real API server would accept
incompletely filled in (e.g. an owner reference without uid), and its generated PATCH
methods pick JSON Patch for a dict body; so requests go through its ApiClient (which
brings kubeconfig / in-cluster authentication) but bodies stay raw JSON.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from kubernetes import client as k8s
from kubernetes import config as k8s_config

GROUP = "kondense.dev"
VERSION = "v1alpha1"
PLURAL = "compressionjobs"
# Kubeflow's MPIJob (the MPI operator v2): a stage's child for backend mpi
MPI_GROUP = "kubeflow.org"
MPI_VERSION = "v2beta1"
MPI_PLURAL = "mpijobs"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer: `status` is the HTTP status code (404, 409, ...). Where the body is a
    Kubernetes Status object, its `message`, `reason` and `details.causes` are kept apart, so that
    a refusal can be told to the user field by field."""

    def __init__(self, status: int, method: str, path: str, body: str):
        self.status = status
        self.method = method
        self.path = path
        self.body = body
        self.subject = ""  # the child the request was about ("Job x-s1"), where the caller says so
        parsed = _status_object(body)
        self.message = str(parsed.get("message") or body)
        self.reason = str(parsed.get("reason") or "")
        details = parsed.get("details") if isinstance(parsed.get("details"), dict) else {}
        self.causes: list[dict] = [c for c in details.get("causes") or [] if isinstance(c, dict)]
        super().__init__(f"{method} {path}: {status} {self.message[:300]}")


def _status_object(body: str) -> dict:
    """The body as a dict (a metav1.Status on errors), or {} where it is not JSON."""
    try:
        value = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def request_attributes(method: str, path: str) -> tuple[str, str, str]:
    """(verb, resource, namespace) of a request as the API server's authorizer names them, e.g.
    ("create", "jobs.batch", "team-a"): what an admin must grant after a 403."""
    parts = [p for p in urlsplit(path).path.split("/") if p]
    group, rest = "", parts[2:]  # /api/v1/...
    if parts[:1] == ["apis"]:
        group, rest = parts[1], parts[3:]  # /apis/GROUP/VERSION/...
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    named = len(rest) > 1
    resource = rest[0] if rest else ""
    if group:
        resource += "." + group
    if len(rest) > 2:
        resource += "/" + rest[2]  # a subresource: compressionjobs.kondense.dev/status
    verb = _VERBS.get(method.upper(), method.lower())
    if verb == "get" and not named:
        verb = "watch" if "watch=" in urlsplit(path).query else "list"
    return verb, resource, namespace


def load_config() -> k8s.ApiClient:
    """In a pod, the service account; elsewhere, $KUBECONFIG or ~/.kube/config."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


class Kube:
    """Raw JSON requests over an authenticated kubernetes ApiClient (thread-safe: urllib3 pools)."""

    def __init__(self, api_client: k8s.ApiClient):
        self.api = api_client

    def request(
        self, method: str, path: str, body: Any = None, content_type: str | None = None, query: dict | None = None
    ) -> dict:
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        _, url, headers, body, _ = self.api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        data = response.read()
        text = data.decode() if isinstance(data, bytes) else (data or "")
        if not 200 <= response.status < 300:
            raise ApiError(response.status, method, path, text)
        return json.loads(text) if text else {}

    # ---- the CompressionJob

    def cj_path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
        return f"{base}/{quote(name)}" if name else base

    def get_cj(self, namespace: str, name: str) -> dict | None:
        return self._get(self.cj_path(namespace, name))

    def patch_cj_status(self, namespace: str, name: str, status: dict) -> dict:
        return self.request("PATCH", self.cj_path(namespace, name) + "/status", {"status": status}, MERGE_PATCH)

    # ---- children

    @staticmethod
    def child_path(kind: str, namespace: str, name: str = "") -> str:
        base = {
            "Job": f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs",
            "Service": f"/api/v1/namespaces/{quote(namespace)}/services",
            "ConfigMap": f"/api/v1/namespaces/{quote(namespace)}/configmaps",
            "Pod": f"/api/v1/namespaces/{quote(namespace)}/pods",
            "MPIJob": f"/apis/{MPI_GROUP}/{MPI_VERSION}/namespaces/{quote(namespace)}/{MPI_PLURAL}",
        }[kind]
        return f"{base}/{quote(name)}" if name else base

    def create_or_get(self, obj: dict) -> tuple[dict, bool]:
        """The object already there under `obj`'s name, or `obj` created. A 409 on create is not
        an error (another pass, or the operator before a restart, got there first).
        Returns (object, created)."""
        kind, meta = obj["kind"], obj["metadata"]
        existing = self.get(kind, meta["namespace"], meta["name"])
        if existing is not None:
            return existing, False
        try:
            return self.request("POST", self.child_path(kind, meta["namespace"]), obj), True
        except ApiError as e:
            if e.status != 409:
                raise
        return self.request("GET", self.child_path(kind, meta["namespace"], meta["name"])), False

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._get(self.child_path(kind, namespace, name))

    def _get(self, path: str) -> dict | None:
        """The object at `path`, or None where there is none (404)."""
        try:
            return self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def set_suspend(self, kind: str, namespace: str, name: str, suspend: bool) -> dict:
        """A Job's spec.suspend, or an MPIJob's spec.runPolicy.suspend (its controller then deletes
        or recreates the pods, and suspends its launcher Job)."""
        patch = {"runPolicy": {"suspend": suspend}} if kind == "MPIJob" else {"suspend": suspend}
        return self.request("PATCH", self.child_path(kind, namespace, name), {"spec": patch}, MERGE_PATCH)

    def delete(self, kind: str, namespace: str, name: str) -> dict:
        """Deletes a child; its dependents (a Job's pods) go in the background, as with kubectl
        (the API's default for a batch/v1 Job would orphan them)."""
        return self.request("DELETE", self.child_path(kind, namespace, name), query={"propagationPolicy": "Background"})

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict]:
        return self.list_labelled("Pod", namespace, selector)

    def list_labelled(self, kind: str, namespace: str, selector: dict[str, str]) -> list[dict]:
        """The objects of `kind` (a child_path kind) in `namespace` that carry every label of `selector`."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))}
        items = self.request("GET", self.child_path(kind, namespace), query=query).get("items") or []
        # filtered here as well: a server (or emulator) that ignores labelSelector must not mix jobs up
        return [
            p
            for p in items
            if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())
        ]

    def pod_log(self, namespace: str, name: str, container: str, tail_lines: int) -> str:
        """The last `tail_lines` lines of a container's log, each prefixed with its RFC 3339 time
        (timestamps=true). The pods/log subresource answers text, not JSON, hence not request()."""
        query = urlencode({"container": container, "tailLines": tail_lines, "timestamps": "true"})
        path = f"{self.child_path('Pod', namespace, name)}/log?{query}"
        _, url, headers, _, _ = self.api.param_serialize(
            "GET", path, header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
        )
        response = self.api.call_api("GET", url, header_params=headers, _request_timeout=30)
        data = response.read()
        text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
        if not 200 <= response.status < 300:
            raise ApiError(response.status, "GET", path, text)
        return text
