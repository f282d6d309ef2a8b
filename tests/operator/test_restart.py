"""Restarting the operator in the middle of a job: nothing is created twice, no status is lost,
the job completes. Its own API server and operator, started with --namespace (the namespaced
scope the Helm chart offers)."""

from __future__ import annotations

import signal

import pytest

from kondense_operator.children import child_name

from .conftest import OperatorProcess, cj_manifest, summary, wait_for

pytestmark = pytest.mark.timeout(150)
NS = "team-a"


def _creates(apiserver, kind_path: str) -> int:
    return sum(
        1
        for token, method, path in apiserver.emulator.log
        if token == "operator-token" and method == "POST" and path.endswith(kind_path)
    )


def test_restart_mid_job_creates_nothing_twice(apiserver, kubeconfig, api, tmp_path):
    op = OperatorProcess(kubeconfig, tmp_path / "op1.log", ["--namespace", NS]).start()
    try:
        api.create_cj(NS, cj_manifest("restartable", NS))
        job1 = wait_for(lambda: api.get("Job", NS, child_name("restartable", 1)), 20)
        pods = api.start_job(job1)
        wait_for(lambda: api.get_cj(NS, "restartable").get("status", {}).get("phase") == "Running", 20)
        # a job in another namespace is not this operator's business
        api.create_cj("elsewhere", cj_manifest("ignored", "elsewhere"))
    finally:
        op.stop(signal.SIGKILL)  # no goodbye: as if the pod were evicted
    before = api.get_cj(NS, "restartable")["status"]

    # stage 1 finishes while no operator runs
    api.succeed_job(job1, pods, summary(1))

    op = OperatorProcess(kubeconfig, tmp_path / "op2.log", ["--namespace", NS]).start()
    try:
        job2 = wait_for(lambda: api.get("Job", NS, child_name("restartable", 2)), 30, message="stage 2 after restart")
        status = api.get_cj(NS, "restartable")["status"]
        assert status["startTime"] == before["startTime"]
        assert next(c for c in status["conditions"] if c["type"] == "Created") == next(
            c for c in before["conditions"] if c["type"] == "Created"
        )
        api.succeed_job(job2, api.start_job(job2), summary(2))
        wait_for(lambda: api.get_cj(NS, "restartable")["status"].get("phase") == "Succeeded", 20)
    finally:
        op.stop()

    # one of each child per stage, ever; one status initialisation
    for kind, suffix in (("Job", "/jobs"), ("Service", "/services"), ("ConfigMap", "/configmaps")):
        assert _creates(apiserver, suffix) == 2, kind
        assert sorted(o["metadata"]["name"] for o in api.list(kind, NS)) == [
            child_name("restartable", 1),
            child_name("restartable", 2),
        ]
    created = [e for e in api.list("Event", NS) if e["reason"] == "Created"]
    assert len(created) == 1
    assert api.get_cj("elsewhere", "ignored").get("status") is None
    assert api.list("Job", "elsewhere") == []
    # kopf with scanning disabled does not list namespaces or CRDs in namespaced mode either
    paths = {path for token, _, path in apiserver.emulator.log if token == "operator-token"}
    assert not any(p.startswith("/api/v1/namespaces?") or p == "/api/v1/namespaces" for p in paths)
    assert not any("customresourcedefinitions" in p for p in paths)
