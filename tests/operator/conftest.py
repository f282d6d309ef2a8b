"""Shared fixtures: a Kubernetes API emulator (kmock) on localhost over real HTTP, a kubeconfig
pointing at it, the operator as a separate process started the way a user starts it, and
helpers that play the Job controller and the kubelet (Job and Pod status)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import pytest
from kmock._internal import enums

from kondense.job.status import stage_summary

from .podlogs import PodLogs

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "compressionjob.yaml"
OPERATOR_BIN = Path(sys.executable).with_name("kondense-operator")
KONDENSE_BIN = Path(sys.executable).with_name("kondense")
GROUP, VERSION, PLURAL = "kondense.dev", "v1alpha1", "compressionjobs"
CJ_RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
# Kubeflow's MPIJob, served only where a test installs "the MPI operator's CRD" (ApiServer(mpijobs=True))
MPIJOB_RESOURCE = "kubeflow.org/v2beta1/mpijobs"
MPIJOB_PREFIX = "/apis/kubeflow.org/"
# kopf's peering resources, as the chart's CRDs (operator.replicas above 1) declare them; served
# always: a standalone operator never asks for them, as the RBAC test sees
PEERING_RESOURCES = {
    "kopf.dev/v1/kopfpeerings": {"kind": "KopfPeering", "namespaced": True, "singular": "kopfpeering"},
    "kopf.dev/v1/clusterkopfpeerings": {
        "kind": "ClusterKopfPeering",
        "namespaced": False,
        "singular": "clusterkopfpeering",
    },
}
# a real API server's answer for a resource it does not serve (no CRD)
NOT_SERVED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "the server could not find the requested resource",
    "reason": "NotFound",
    "details": {},
    "code": 404,
}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Refusal:
    """An answer the emulator gives instead of serving a request, as an API server that validates
    (422) or authorises (403) would: to `method` on `path` (without the query), for an object named
    `name` (any if empty), `times` times (for ever if None)."""

    method: str
    path: str
    status: int
    body: dict
    name: str = ""
    times: int | None = None

    def matches(self, method: str, path: str, data: Any) -> bool:
        if self.times == 0 or method != self.method or path != self.path:
            return False
        name = ((data or {}).get("metadata") or {}).get("name") if isinstance(data, dict) else None
        return not self.name or name == self.name or path.endswith("/" + self.name)


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what a real API server does to metadata: uid, resourceVersion,
    creationTimestamp, generation (bumped when the spec changes) and names from generateName. It also logs every request
    (method, path) so the RBAC test can see exactly what the operator calls."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.log: list[tuple[str, str, str]] = []  # (token, method, path)
        self.refusals: list[Refusal] = []  # kmock validates nothing: the tests say what to refuse
        # URL prefixes of API groups the server does not serve (kmock would serve any resource it is
        # asked for, even one without a CRD): answered 404 as a real API server answers them
        self.unserved: list[str] = []
        self._versions = itertools.count(1000)
        self.pod_logs = PodLogs()  # pods/log, which kmock does not serve (podlogs.py)

    async def _handle(self, request):  # type: ignore[override]
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        method = str(getattr(request.method, "value", request.method)).upper()
        if any(request.url.path.startswith(prefix) for prefix in self.unserved):
            self.log.append((token, method, request.url.path_qs))
            return aiohttp.web.json_response(NOT_SERVED, status=404)
        if request.resource is not None:
            self.log.append((token, method, request.url.path_qs))
            data = request.data
            # before kmock's own handling, which would store the object even if a reaction answered
            for refusal in self.refusals:
                if refusal.matches(method, request.url.path, data):
                    if refusal.times is not None:
                        refusal.times -= 1
                    return aiohttp.web.json_response(refusal.body, status=refusal.status)
            if request.subresource == "log" and method == "GET":
                return self.pod_logs.answer(self._stored(request), request.namespace, request.name, request.url.query)
            if isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                if request.action == enums.action.CREATE:
                    if meta.get("generateName") and not meta.get("name"):  # kopf's Events use it
                        meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                    meta.setdefault("uid", str(uuid.uuid4()))
                    meta.setdefault("creationTimestamp", _now())
                    meta["generation"] = 1
                    if request.namespace and not meta.get("namespace"):
                        meta["namespace"] = request.namespace
                    meta["resourceVersion"] = str(next(self._versions))
                elif request.action == enums.action.UPDATE and request.name:
                    meta["resourceVersion"] = str(next(self._versions))
                    key = (request.resource, request.namespace, request.name)
                    if "spec" in data and not request.subresource and key in self.objects:
                        current = self.objects[key]
                        if not current.deleted:
                            old_spec = current.get("spec") or {}
                            if any(old_spec.get(k) != v for k, v in (data["spec"] or {}).items()):
                                meta["generation"] = int((current.get("metadata") or {}).get("generation") or 1) + 1
        return await super()._handle(request)

    def _stored(self, request) -> dict | None:
        """The object a subresource request is about, as stored (None: there is none)."""
        key = (request.resource, request.namespace, request.name)
        obj = self.objects[key] if key in self.objects else None
        return None if obj is None or obj.deleted else dict(obj)


class ApiServer:
    """The emulator served on 127.0.0.1 from a background thread with its own event loop."""

    def __init__(self, mpijobs: bool = False) -> None:
        """mpijobs: serve kubeflow.org/v2beta1 mpijobs (as with the MPI operator installed); else
        every request under /apis/kubeflow.org/ is answered 404, as without its CRD."""
        self.mpijobs = mpijobs
        self.url = ""
        self.emulator: Emulator | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="kmock")

    def start(self) -> ApiServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("kmock did not start")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator() as k, kmock.Server(k) as server:
            k.resources.load_bundled()  # without the built-in kinds kopf waits forever
            k.resources[CJ_RESOURCE] = {
                "kind": "CompressionJob",
                "namespaced": True,
                "singular": "compressionjob",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortnames": ["cpj"],
                "subresources": ["status"],
            }
            for resource, info in PEERING_RESOURCES.items():
                # no status subresource, as in the chart's CRDs: kopf patches the keep-alives into
                # the object itself
                verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
                k.resources[resource] = {**info, "verbs": verbs, "shortnames": [], "subresources": []}
            if self.mpijobs:
                k.resources[MPIJOB_RESOURCE] = {
                    "kind": "MPIJob",
                    "namespaced": True,
                    "singular": "mpijob",
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    "shortnames": ["mpij"],
                    "subresources": ["status"],
                }
            else:
                k.unserved.append(MPIJOB_PREFIX)
            self.emulator = k
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def unannounced_patch(self, resource: str, namespace: str, name: str, patch: dict) -> None:
        """Changes a stored object without the watch event a real API server would send: a missed
        event (a watch reconnect that lost it), as the operator's re-check must cope with.
        `resource` as kmock spells it, e.g. "batch/v1/jobs"."""

        async def change() -> None:
            assert self.emulator is not None
            async with self.emulator._lock:
                self.emulator.objects[resource, namespace, name].patch(patch)

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(change(), self._loop).result(10)

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def write_kubeconfig(path: Path, url: str, token: str = "test-token") -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
current-context: kmock
clusters:
- name: kmock
  cluster: {{server: "{url}"}}
users:
- name: kmock
  user: {{token: {token}}}
contexts:
- name: kmock
  context: {{cluster: kmock, user: kmock, namespace: default}}
""")
    return path


class Api:
    """What the tests do to the cluster: through the `kubernetes` client for CompressionJobs
    (as a user would), raw JSON for playing the controllers."""

    def __init__(self, kubeconfig: Path):
        from kubernetes import client, config

        from kondense_operator.kube import Kube

        self.client = config.new_client_from_config(config_file=str(kubeconfig))
        self.custom = client.CustomObjectsApi(self.client)
        self.raw = Kube(self.client)

    def create_cj(self, namespace: str, body: dict) -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def get_cj(self, namespace: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def patch_cj(self, namespace: str, name: str, patch: dict) -> dict:
        return self.raw.request("PATCH", self.raw.cj_path(namespace, name), patch, "application/merge-patch+json")

    def delete_cj(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def list_cjs(self, namespace: str) -> list[dict]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL).get("items") or []

    def list(self, kind: str, namespace: str) -> list[dict]:
        path = f"/api/v1/namespaces/{namespace}/events" if kind == "Event" else self.raw.child_path(kind, namespace)
        return self.raw.request("GET", path).get("items") or []

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self.raw.get(kind, namespace, name)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.raw.request("DELETE", self.raw.child_path(kind, namespace, name))

    def patch_status(self, kind: str, namespace: str, name: str, status: dict) -> dict:
        return self.raw.request(
            "PATCH",
            self.raw.child_path(kind, namespace, name) + "/status",
            {"status": status},
            "application/merge-patch+json",
        )

    # ---- playing the Job controller and the kubelet

    def make_pods(self, job: dict) -> list[dict]:
        """The pods an Indexed Job's controller would create: one per index, from the template."""
        meta, spec = job["metadata"], job["spec"]
        pods = []
        for i in range(spec["completions"]):
            tpl = json.loads(json.dumps(spec["template"]))
            labels = {
                **tpl["metadata"].get("labels", {}),
                "batch.kubernetes.io/job-completion-index": str(i),
                "job-name": meta["name"],
            }
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{meta['name']}-{i}-abcde",
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": {
                        **tpl["metadata"].get("annotations", {}),
                        "batch.kubernetes.io/job-completion-index": str(i),
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {**tpl["spec"], "hostname": f"{meta['name']}-{i}"},
            }
            pods.append(self.raw.create_or_get(pod)[0])
        return pods

    def set_pod(self, pod: dict, phase: str, state: dict) -> None:
        container = pod["spec"]["containers"][0]["name"]  # "worker", or an MPIJob launcher's "launcher"
        self.patch_status(
            "Pod",
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            {
                "phase": phase,
                "containerStatuses": [
                    {"name": container, "ready": False, "restartCount": 0, "image": "x", "imageID": "", "state": state}
                ],
            },
        )

    def unschedulable(self, pod: dict, message: str) -> None:
        """What the scheduler writes on a pod it cannot place: Pending, PodScheduled False."""
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": _now(),
        }
        self.patch_status(
            "Pod",
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            {"phase": "Pending", "conditions": [condition]},
        )

    def schedule(self, pod: dict) -> None:
        """The pod placed after all (a node was added), and its worker running."""
        condition = {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}
        running = {"name": pod["spec"]["containers"][0]["name"], "ready": True, "restartCount": 0, "image": "x"}
        running |= {"imageID": "", "state": {"running": {"startedAt": _now()}}}
        self.patch_status(
            "Pod",
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            {"phase": "Running", "conditions": [condition], "containerStatuses": [running]},
        )

    def start_job(self, job: dict) -> list[dict]:
        pods = self.make_pods(job)
        for pod in pods:
            self.set_pod(pod, "Running", {"running": {"startedAt": _now()}})
        self.patch_status(
            "Job", job["metadata"]["namespace"], job["metadata"]["name"], {"active": len(pods), "startTime": _now()}
        )
        return pods

    def succeed_job(self, job: dict, pods: list[dict], summary: dict | str) -> None:
        """Every pod Succeeded, rank 0 with `summary` as its termination message; the Job Complete."""
        for i, pod in enumerate(pods):
            term = {"exitCode": 0, "reason": "Completed", "finishedAt": _now()}
            if i == 0:
                term["message"] = summary if isinstance(summary, str) else json.dumps(summary)
            self.set_pod(pod, "Succeeded", {"terminated": term})
        n = len(pods)
        self.patch_status(
            "Job",
            job["metadata"]["namespace"],
            job["metadata"]["name"],
            {
                "active": 0,
                "succeeded": n,
                "completedIndexes": f"0-{n - 1}" if n > 1 else "0",
                "completionTime": _now(),
                "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": _now()}],
            },
        )

    def fail_job(
        self,
        job: dict,
        reason: str = "BackoffLimitExceeded",
        message: str = "Job has reached the specified backoff limit",
    ) -> None:
        self.patch_status(
            "Job",
            job["metadata"]["namespace"],
            job["metadata"]["name"],
            {
                "active": 0,
                "failed": 1,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": _now(),
                    }
                ],
            },
        )

    # ---- playing the MPI operator (kubeflow/mpi-operator v2) for a stage's MPIJob

    def make_mpi_pods(self, mpijob: dict) -> tuple[dict, list[dict]]:
        """(launcher, workers): the pods the MPI operator makes from the MPIJob's templates, with its
        labels added (it keeps the templates'): workers NAME-worker-I, the launcher from its Job."""
        meta, spec = mpijob["metadata"], mpijob["spec"]
        owner = {"apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob", "name": meta["name"], "uid": meta["uid"]}

        def pod(name: str, replica: str, extra: dict, owner_ref: dict) -> dict:
            tpl = json.loads(json.dumps(spec["mpiReplicaSpecs"][replica]["template"]))
            role = replica.lower()
            labels = {
                **tpl["metadata"].get("labels", {}),
                "training.kubeflow.org/operator-name": "mpi-operator",
                "training.kubeflow.org/job-name": meta["name"],
                "training.kubeflow.org/job-role": role,
                **extra,
            }
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": dict(tpl["metadata"].get("annotations", {})),
                    "ownerReferences": [{**owner_ref, "controller": True}],
                },
                "spec": {**tpl["spec"], "hostname": name, "subdomain": meta["name"]},
            }
            return self.raw.create_or_get(body)[0]

        workers = [
            pod(
                f"{meta['name']}-worker-{i}",
                "Worker",
                {"training.kubeflow.org/replica-index": str(i)},
                owner,
            )
            for i in range(spec["mpiReplicaSpecs"]["Worker"]["replicas"])
        ]
        launcher_job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": f"{meta['name']}-launcher",
            "uid": "launcher-uid",
        }
        launcher = pod(f"{meta['name']}-launcher-abcde", "Launcher", {}, launcher_job)
        return launcher, workers

    def set_mpijob_status(self, mpijob: dict, status: dict) -> dict:
        return self.patch_status("MPIJob", mpijob["metadata"]["namespace"], mpijob["metadata"]["name"], status)

    @staticmethod
    def mpi_condition(type_: str, status: str, reason: str, message: str = "") -> dict:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message or f"MPIJob {reason}",
            "lastUpdateTime": _now(),
            "lastTransitionTime": _now(),
        }

    def start_mpijob(self, mpijob: dict) -> tuple[dict, list[dict]]:
        """Conditions Created then Running, every pod running (the launcher once the workers are Ready)."""
        self.set_mpijob_status(
            mpijob, {"conditions": [self.mpi_condition("Created", "True", "MPIJobCreated")], "startTime": _now()}
        )
        launcher, workers = self.make_mpi_pods(mpijob)
        for p in [*workers, launcher]:
            self.set_pod(p, "Running", {"running": {"startedAt": _now()}})
        self.set_mpijob_status(
            mpijob,
            {
                "conditions": [
                    self.mpi_condition("Created", "True", "MPIJobCreated"),
                    self.mpi_condition("Running", "True", "MPIJobRunning"),
                ],
                "replicaStatuses": {"Launcher": {"active": 1}, "Worker": {"active": len(workers)}},
            },
        )
        return launcher, workers

    def succeed_mpijob(self, mpijob: dict, launcher: dict, workers: list[dict], summary: dict | str) -> None:
        """The launcher exits 0 with `summary` as its termination message, its running workers are
        deleted (cleanPodPolicy Running), the MPIJob turns Succeeded."""
        message = summary if isinstance(summary, str) else json.dumps(summary)
        term = {"exitCode": 0, "reason": "Completed", "message": message, "finishedAt": _now()}
        self.set_pod(launcher, "Succeeded", {"terminated": term})
        for w in workers:
            self.delete("Pod", w["metadata"]["namespace"], w["metadata"]["name"])
        self.set_mpijob_status(
            mpijob,
            {
                "conditions": [
                    self.mpi_condition("Created", "True", "MPIJobCreated"),
                    self.mpi_condition("Running", "False", "MPIJobRunning"),
                    self.mpi_condition("Succeeded", "True", "MPIJobSucceeded"),
                ],
                "replicaStatuses": {"Launcher": {"succeeded": 1}, "Worker": {}},
                "completionTime": _now(),
            },
        )

    def fail_mpijob(
        self,
        mpijob: dict,
        reason: str = "BackoffLimitExceeded/Error",
        message: str = "Job has reached the specified backoff limit: ",
    ) -> None:
        self.set_mpijob_status(
            mpijob,
            {
                "conditions": [
                    self.mpi_condition("Created", "True", "MPIJobCreated"),
                    self.mpi_condition("Running", "False", "MPIJobRunning"),
                    self.mpi_condition("Failed", "True", reason, message),
                ],
                "completionTime": _now(),
            },
        )


def _server_of(kubeconfig: Path) -> str:
    import yaml

    return yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]


# how long a test waits for one step of the operator: a pass took 8-17 s on a loaded 2-core machine
PATIENCE = 60


def wait_for(what: Callable[[], Any], timeout: float = 30, interval: float = 0.2, message: str = "") -> Any:
    """Poll until `what()` is truthy; its value, or an AssertionError with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
        except Exception as e:  # noqa: BLE001  (not there yet)
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or what}: last {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """`kondense-operator` as a user starts it, in its own process group."""

    def __init__(self, kubeconfig: Path, log_path: Path, args: list[str] | None = None, token: str = "operator-token"):
        # its own token, so the API server's log tells its requests from the tests' own
        self.token = token
        self.kubeconfig = write_kubeconfig(
            log_path.with_name(f"{log_path.stem}-kubeconfig"), _server_of(kubeconfig), token=token
        )
        self.log_path = log_path
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.args = args if args is not None else ["--all-namespaces"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KONDENSE_WATCH_NAMESPACES", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                str(OPERATOR_BIN),
                *self.args,
                "--metrics-port",
                str(self.metrics_port),
                "--health-port",
                str(self.health_port),
                "--verbose",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.healthy, timeout=60, message=f"the operator's /healthz (log: {self.log_path})")
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._log.close()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value from Prometheus text (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted((labels or {}).items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if "{" in key:
            n, _, rest = key.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest.rstrip("}") else ""
        else:
            n, got = key, ""
        if n == name and got == want:
            return float(value)
    return 0.0


def cj_manifest(name: str, namespace: str, **spec: Any) -> dict:
    base = {
        "model": {"uri": "pvc://models/tiny.pt", "arch": "tinynet"},
        "data": {"dataset": "fashion-mnist"},
        "delta": 2.0,
        "stage": 2,
        "workers": 2,
        "slotsPerWorker": 1,
        "backend": "torch",
        "device": "cpu",
        "output": {"uri": "pvc://models/out/" + name},
    }
    base.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CompressionJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }


def lenet5_on_claim(pvc: Path) -> None:
    """A quickly trained zoo LeNet-5 (seconds to train and scan) as the user's state dict on claim
    `models` under `pvc`: the model of tiny_manifest."""
    (pvc / "models").mkdir(parents=True)
    subprocess.run(
        [str(KONDENSE_BIN), "zoo", "train", "lenet5", "--dataset", "fashion-mnist", "--epochs", "2"]
        + ["--train-samples", "2000", "--val-samples", "200", "--test-samples", "200"]
        + ["--out", str(pvc / "models" / "m.pt")],
        check=True,
        capture_output=True,
        timeout=300,
    )


def tiny_manifest(name: str, namespace: str, **spec: Any) -> dict:
    """A CompressionJob of lenet5_on_claim's network whose stages take seconds, output on the claim."""
    budget = {
        "trainSamples": 1000,
        "valSamples": 300,
        "testSamples": 300,
        "scanSamples": 200,
        "ratios": [0.5],
        "stage1Epochs": 1,
        "maxSteps": 1,
    }
    return cj_manifest(
        name,
        namespace,
        model={"uri": "pvc://models/m.pt", "arch": "lenet5"},
        data={"dataset": "fashion-mnist"},
        delta=10,
        output={"uri": "pvc://models/out"},
        budget=budget,
        **spec,
    )


def summary(stage: int) -> dict:
    """What rank 0 of `stage` leaves in its termination message: the engine's summary of a report."""
    six = {"accuracy": 90.0, "sizeMB": 1.0, "macsG": 0.1, "paramsM": 0.2, "memoryMB": 2.0, "latencyMs": 0.5}
    report = {
        "original": six,
        "stage1": {**six, "accuracy": 89.5, "sizeMB": 0.5},
        "trainingSamples": 100,
        "enhancement": {
            "accuracyDrop": 1.0 if stage == 2 else 0.5,
            "size": 4.0 if stage == 2 else 2.0,
            "macs": 2.0,
            "params": 3.0,
            "memory": 1.5,
            "latency": 1.2,
        },
    }
    if stage == 2:
        report["stage2"] = {**six, "accuracy": 89.0, "sizeMB": 0.25}
    return stage_summary(report, stage, "pvc://models/out")


@pytest.fixture(scope="module")
def apiserver():
    server = ApiServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kubeconfig(apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig", apiserver.url)


@pytest.fixture(scope="module")
def api(kubeconfig: Path) -> Api:
    return Api(kubeconfig)


def operator_process(
    kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory, *args: str
) -> Iterator[OperatorProcess]:
    """For a module-scoped fixture: an operator process started with `args` (default
    --all-namespaces), its log in a directory of its own, stopped when the module is done."""
    op = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", list(args) or None).start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def operator(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory):
    """One operator process for a module's tests (each test uses its own namespace)."""
    yield from operator_process(kubeconfig, tmp_path_factory)


_ns_counter = itertools.count()


@pytest.fixture
def namespace() -> str:
    return f"ns{os.getpid() % 10000}-{next(_ns_counter)}"
