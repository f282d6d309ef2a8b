"""The operator end to end: `kondense-operator --all-namespaces` in its own process against the
kmock API emulator over real HTTP; the tests play the Job controller and the kubelet."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from kondense_operator import rbac
from kondense_operator.children import child_metadata, child_name

from .conftest import Api, ApiServer, OperatorProcess, cj_manifest, metric_value, summary, wait_for, write_kubeconfig

pytestmark = pytest.mark.timeout(120)


def phase_of(api, ns: str, name: str) -> str | None:
    return (api.get_cj(ns, name).get("status") or {}).get("phase")


def wait_phase(api, ns: str, name: str, phase: str, timeout: float = 20) -> dict:
    wait_for(lambda: phase_of(api, ns, name) == phase, timeout, message=f"{ns}/{name} phase {phase}")
    return api.get_cj(ns, name)["status"]


def stage_job(api, ns: str, name: str, stage: int, timeout: float = 20) -> dict:
    return wait_for(lambda: api.get("Job", ns, child_name(name, stage)), timeout, message=f"stage {stage} Job")


def test_two_stages_to_succeeded_with_metrics(api, operator, namespace):
    before = operator.metrics()
    api.create_cj(namespace, cj_manifest("resnet.fmnist", namespace))  # a name with a dot: children get a DNS-1035 name
    name = "resnet.fmnist"
    job1 = stage_job(api, namespace, name, 1)
    assert job1["spec"]["completionMode"] == "Indexed" and job1["spec"]["completions"] == 2
    assert api.get("Service", namespace, child_name(name, 1))["spec"]["clusterIP"] == "None"
    assert "job.yaml" in api.get("ConfigMap", namespace, child_name(name, 1))["data"]
    assert api.get("Job", namespace, child_name(name, 2)) is None, "stage 2 must wait for stage 1"

    pods = api.start_job(job1)
    status = wait_phase(api, namespace, name, "Running")
    assert status["stage"] == 1 and status["startTime"]
    api.succeed_job(job1, pods, summary(1))

    job2 = stage_job(api, namespace, name, 2)
    assert job2["spec"]["template"]["spec"]["containers"][0]["command"][-3:] == ["2", "--pvc-root", "/mnt/pvc"]
    wait_for(lambda: api.get_cj(namespace, name)["status"].get("stage") == 2, 10)
    assert set(api.get_cj(namespace, name)["status"]["metrics"]) == {"original", "stage1", "enhancement"}
    pods2 = api.start_job(job2)
    api.succeed_job(job2, pods2, summary(2))

    status = wait_phase(api, namespace, name, "Succeeded")
    six = {"accuracy", "sizeMB", "macsG", "paramsM", "memoryMB", "latencyMs"}
    for key in ("original", "stage1", "stage2"):
        assert set(status["metrics"][key]) == six
    assert status["metrics"]["enhancement"]["size"] == 4.0
    assert status["artifacts"]["model"].startswith("pvc://")
    assert status["completionTime"] and status["observedGeneration"] == 1
    assert status["message"] == "compressed 3.0x (params), 4.0x (size) at 1.00 points"
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Succeeded"]["status"] == "True" and conds["Running"]["status"] == "False"
    assert conds["Succeeded"]["message"] == status["message"]
    assert conds["Created"]["status"] == "True"
    for c in status["conditions"]:
        assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}

    # Events on the CompressionJob for the transitions
    reasons = wait_for(
        lambda: (
            {e["reason"] for e in api.list("Event", namespace)} >= {"Created", "Succeeded"}
            and {e["reason"] for e in api.list("Event", namespace)}
        ),
        10,
    )
    assert {"Stage1Succeeded", "Stage2Succeeded", "JobCreated"} <= reasons
    stage1 = next(e for e in api.list("Event", namespace) if e["reason"] == "Stage1Succeeded")
    assert stage1["message"] == "stage 1 succeeded: 3.0x (params), 2.0x (size) at 0.50 points"

    after = operator.metrics()
    assert metric_value(after, "kondense_jobs_created_total") == metric_value(before, "kondense_jobs_created_total") + 1
    assert (
        metric_value(after, "kondense_jobs_succeeded_total")
        == metric_value(before, "kondense_jobs_succeeded_total") + 1
    )
    assert metric_value(after, "kondense_stage_duration_seconds_count", {"stage": "2"}) >= 1
    assert metric_value(after, "kondense_job_info", {"backend": "torch", "stage": "2", "phase": "Succeeded"}) >= 1
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=5) as r:
        assert r.status == 200


def test_stage_3_runs_at_the_end_of_stage_2s_job(api, operator, namespace):
    """No Job of its own for stage 3: stage 2's Job ends with it; the status then says stage 3, holds
    metrics.stage3, and the enhancement `kubectl get cpj` shows is the INT8 model's."""
    name = "int8"
    api.create_cj(namespace, cj_manifest(name, namespace, stage=3))
    job1 = stage_job(api, namespace, name, 1)
    api.succeed_job(job1, api.start_job(job1), summary(1))
    job2 = stage_job(api, namespace, name, 2)
    assert job2["spec"]["template"]["spec"]["containers"][0]["command"][-3:] == ["2", "--pvc-root", "/mnt/pvc"]
    pods2 = api.start_job(job2)
    running = wait_phase(api, namespace, name, "Running")
    assert running["message"].startswith("stage 2 (then stage 3, INT8, in the same processes) running")
    last = summary(2)
    last["metrics"]["stage3"] = {**last["metrics"]["stage2"], "sizeMB": 0.0625}
    last["enhancement"] = {**last["enhancement"], "size": 16.0}
    last["stage3"] = "kept"
    api.succeed_job(job2, pods2, last)

    status = wait_phase(api, namespace, name, "Succeeded")
    assert status["stage"] == 3 and status["metrics"]["stage3"]["sizeMB"] == 0.0625
    assert status["metrics"]["enhancement"]["size"] == 16.0  # the printer column "Size x" reads it
    assert api.get("Job", namespace, child_name(name, 3)) is None
    events = wait_for(
        lambda: [e["message"] for e in api.list("Event", namespace) if e["reason"] == "Stage2Succeeded"], 10
    )
    assert events[0].startswith("stages 2 and 3 succeeded: 3.0x (params), 16.0x (size)")


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"output": {"uri": "/tmp/out"}}, "spec.output.uri"),
        ({"delta": 0}, "spec.delta"),
        ({"model": {"zoo": "resnet18", "uri": "pvc://m/x.pt"}}, "spec.model.uri"),
    ],
)
def test_invalid_spec_fails_without_children(api, operator, namespace, spec, field):
    before = metric_value(operator.metrics(), "kondense_jobs_failed_total", {"reason": "InvalidSpec"})
    api.create_cj(namespace, cj_manifest("bad", namespace, **spec))
    status = wait_phase(api, namespace, "bad", "Failed")
    assert status["reason"] == "InvalidSpec" and status["message"].startswith(field + ":")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec" and failed["status"] == "True"
    time.sleep(1)
    for kind in ("Job", "Service", "ConfigMap"):
        assert api.list(kind, namespace) == []
    assert metric_value(operator.metrics(), "kondense_jobs_failed_total", {"reason": "InvalidSpec"}) == before + 1
    assert any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in api.list("Event", namespace))


def _oom(api, job, pods):
    api.set_pod(pods[1], "Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    api.fail_job(job)


def _worker_error(api, job, pods):
    msg = json.dumps({"stage": 1, "error": "model file /mnt/pvc/models/tiny.pt not found"})
    api.set_pod(pods[0], "Failed", {"terminated": {"exitCode": 1, "reason": "Error", "message": msg}})
    api.fail_job(job)


def _backoff(api, job, pods):
    api.fail_job(job)


def _deadline(api, job, pods):
    api.fail_job(job, "DeadlineExceeded", "Job was active longer than specified deadline")


def _image(api, job, pods):
    api.set_pod(pods[0], "Pending", {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}})


@pytest.mark.parametrize(
    "fail, reason, words",
    [
        (_oom, "OOMKilled", "memory"),
        (_worker_error, "WorkerError", "not found"),
        (_backoff, "BackoffLimitExceeded", "backoff limit"),
        (_deadline, "DeadlineExceeded", "deadline"),
        (_image, "ImagePullBackOff", "ImagePullBackOff"),
    ],
)
def test_failed_stage_has_its_reason(api, operator, namespace, fail, reason, words):
    before = metric_value(operator.metrics(), "kondense_jobs_failed_total", {"reason": reason})
    status = failed_stage(api, namespace, "failing", fail)
    assert status["reason"] == reason and words in status["message"] and status["message"].startswith("stage 1:")
    assert api.get("Job", namespace, child_name("failing", 2)) is None
    assert metric_value(operator.metrics(), "kondense_jobs_failed_total", {"reason": reason}) == before + 1
    if reason == "ImagePullBackOff":  # a pod that can never start: its Job is stopped
        assert api.get("Job", namespace, child_name("failing", 1))["spec"]["suspend"] is True


def failed_stage(api, ns: str, name: str, fail) -> dict:
    """A job whose stage 1 fails the way `fail` plays it; its status once Failed."""
    api.create_cj(ns, cj_manifest(name, ns))
    job = stage_job(api, ns, name, 1)
    fail(api, job, api.start_job(job))
    return wait_phase(api, ns, name, "Failed")


def test_suspend_and_resume(api, operator, namespace):
    suspend_resume_succeed(api, namespace, "pausable")
    reasons = [e["reason"] for e in api.list("Event", namespace)]
    assert "Suspended" in reasons and "Running" in reasons


def suspend_resume_succeed(api, ns: str, name: str) -> None:
    """A job created suspended, resumed, suspended while running, resumed, and run to success."""
    api.create_cj(ns, cj_manifest(name, ns, suspend=True))
    job = stage_job(api, ns, name, 1)
    assert job["spec"]["suspend"] is True
    status = wait_phase(api, ns, name, "Suspended")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "True"

    api.patch_cj(ns, name, {"spec": {"suspend": False}})
    wait_for(lambda: api.get("Job", ns, job["metadata"]["name"])["spec"]["suspend"] is False, 20)
    pods = api.start_job(job)
    status = wait_phase(api, ns, name, "Running")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "False"

    api.patch_cj(ns, name, {"spec": {"suspend": True}})
    wait_for(lambda: api.get("Job", ns, job["metadata"]["name"])["spec"]["suspend"] is True, 20)
    status = wait_phase(api, ns, name, "Suspended")
    assert status["observedGeneration"] >= 2

    api.patch_cj(ns, name, {"spec": {"suspend": False}})
    wait_phase(api, ns, name, "Running")
    api.succeed_job(job, pods, summary(1))
    job2 = stage_job(api, ns, name, 2)
    assert job2["spec"]["suspend"] is False
    api.succeed_job(job2, api.start_job(job2), summary(2))
    status = wait_phase(api, ns, name, "Succeeded")
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Created": "True",
        "Suspended": "False",
        "Running": "False",
        "Succeeded": "True",
    }


def test_deletion_takes_the_children_along(api, operator, namespace):
    api.create_cj(namespace, cj_manifest("doomed", namespace))
    stage_job(api, namespace, "doomed", 1)
    uid = api.get_cj(namespace, "doomed")["metadata"]["uid"]
    for kind in ("Service", "ConfigMap", "Job"):
        # owner references: the garbage collector's way, should the operator be down at deletion
        (child,) = api.list(kind, namespace)
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["controller"] is True and ref["kind"] == "CompressionJob"
        assert ref["blockOwnerDeletion"] is True
    api.delete_cj(namespace, "doomed")
    # kmock has no garbage collector: the operator deletes them itself before its finalizer lets go
    wait_for(lambda: all(api.list(kind, namespace) == [] for kind in ("Service", "ConfigMap", "Job")), 10)
    wait_for(lambda: api.list_cjs(namespace) == [], 10, message="the CompressionJob gone")
    time.sleep(2)
    for kind in ("Service", "ConfigMap", "Job"):
        assert api.list(kind, namespace) == [], "nothing comes back"


@dataclass
class Cluster:
    apiserver: ApiServer
    api: Api
    operator: OperatorProcess


@pytest.fixture
def own_cluster(tmp_path: Path):
    """An API server and an operator for one test alone: the server's request log then holds
    that test's requests only, whichever tests ran before it. The server serves MPIJobs and the
    operator's worker config enables backend mpi, so that every right it may need is exercised."""
    server = ApiServer(mpijobs=True).start()
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        worker = tmp_path / "worker.yaml"
        worker.write_text("mpiJob: {enabled: true}\n")
        op = OperatorProcess(
            kubeconfig, tmp_path / "operator.log", ["--all-namespaces", "--worker-config", str(worker)]
        )
        op.start()
        try:
            yield Cluster(server, Api(kubeconfig), op)
        finally:
            op.stop()
    finally:
        server.stop()


def test_rbac_rules_cover_exactly_what_the_operator_calls(own_cluster: Cluster):
    """Every request an operator makes through a job's life (kopf's own included) is allowed by
    rbac.py's rules, and every rule is used: complete and minimal. The test's own API server and
    operator, so that the request log holds exactly its scenarios, whatever ran before. The
    operator runs backend mpi too, so MPIJOB_RULES (which the chart grants only with
    workers.mpiJob.enabled) count; an operator without the switch makes no request about
    mpijobs at all (test_mpijob.py::test_switch_off_fails_the_job_without_touching_mpijobs)."""
    from .test_mpijob import mpi_suspend_resume_succeed

    api, ns = own_cluster.api, "rbac"
    suspend_resume_succeed(api, ns, "lifecycle")
    failed_stage(api, ns, "unpullable", _image)
    mpi_suspend_resume_succeed(api, ns, "mpi-lifecycle")
    for name in ("lifecycle", "unpullable", "mpi-lifecycle"):  # deletion: the operator deletes the children
        api.delete_cj(ns, name)
    wait_for(lambda: api.list_cjs(ns) == [], 20, message="the deleted CompressionJobs gone")
    time.sleep(1)  # kopf's last bookkeeping patches after the final status
    calls = {(m, p) for token, m, p in own_cluster.apiserver.emulator.log if token == "operator-token"}
    assert calls, "the operator made no requests?"
    used: set[tuple[str, str, str]] = set()
    for method, path in calls:
        group, resource, verb = _rbac_request(method, path)
        if resource is None:
            continue  # discovery (/api, /apis/...): open to every authenticated user
        rule = next(
            (
                r
                for r in rbac.namespaced_rules(mpi_job=True) + rbac.CLUSTER_RULES
                if group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
            ),
            None,
        )
        assert rule is not None, f"{method} {path} ({group}/{resource} {verb}) is not in rbac.py"
        used.add((group, resource, verb))
    granted = {
        (g, r, v)
        for rule in rbac.namespaced_rules(mpi_job=True) + rbac.CLUSTER_RULES
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    # the owner-reference rights are checked by the API server's admission of the children's
    # create, never requested (rbac.OWNER_REFERENCE_RULES): granted, unused, and still needed
    assert rbac.OWNER_REFERENCE_RULES <= granted and not rbac.OWNER_REFERENCE_RULES & used
    owner = {"metadata": {"name": "a", "namespace": ns, "uid": "u"}}  # what every child's metadata is built from
    assert child_metadata(owner, 1)["ownerReferences"][0]["blockOwnerDeletion"] is True, (
        "no child sets blockOwnerDeletion any more: drop rbac.OWNER_REFERENCE_RULES"
    )
    assert granted - rbac.OWNER_REFERENCE_RULES == used, f"granted but never used: {granted - used}"
    assert {(g, r, v) for g, r, v in used if g == "kubeflow.org"} == {
        ("kubeflow.org", "mpijobs", v) for v in ("get", "list", "watch", "create", "patch", "delete")
    }
    for rule in rbac.namespaced_rules(mpi_job=True) + rbac.CLUSTER_RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "secrets" not in rule["resources"]


def _rbac_request(method: str, path: str) -> tuple[str, str | None, str]:
    """(apiGroup, resource[/subresource], verb) of a request, as the API server's authorizer sees it."""
    from urllib.parse import urlparse

    parts = [p for p in urlparse(path).path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"]:
        group, rest = parts[1], parts[3:]
    else:
        return "", None, ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return group, None, ""
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"GET": "get" if named else "list", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[
        method
    ]
    if method == "GET" and "watch=" in path:
        verb = "watch"
    return group, resource, verb
