"""Requests and limits the API server would refuse (issue #13): the worker config's defaults, the
CompressionJob's spec.resources and the GPU limit of device cuda are merged and checked before any
child exists, and a bad mix fails the job once, with the field to fix. kmock validates nothing, so
without the operator's own check this job would get a Job (which a real API server refuses): the
test asserts that no child was ever posted. Its own operator, with a worker config and a 1 s
re-check so that later passes happen within the test."""

from __future__ import annotations

import time

import pytest

from .conftest import PATIENCE, OperatorProcess, cj_manifest, metric_value, wait_for

pytestmark = pytest.mark.timeout(300)

MESSAGE = (
    "worker pods: spec.resources.requests.memory (8Gi) is above the limit "
    "(4Gi, from the worker config's resources.limits.memory)"
)


@pytest.fixture(scope="module")
def operator(kubeconfig, tmp_path_factory):
    where = tmp_path_factory.mktemp("operator")
    config = where / "worker.yaml"
    config.write_text("resources:\n  limits: {memory: 4Gi}\n")
    op = OperatorProcess(
        kubeconfig,
        where / "operator.log",
        ["--all-namespaces", "--worker-config", str(config), "--recheck-seconds", "1"],
    ).start()
    yield op
    op.stop()


def posts_to(apiserver, namespace: str) -> list[str]:
    """The operator's creations in `namespace` other than events."""
    return [
        path
        for token, method, path in apiserver.emulator.log
        if token == "operator-token"
        and method == "POST"
        and f"/namespaces/{namespace}/" in path
        and not path.endswith("/events")
    ]


def test_invalid_merged_resources_fail_the_job_once_before_any_child(apiserver, api, operator, namespace):
    before = operator.metrics()
    api.create_cj(namespace, cj_manifest("greedy", namespace, resources={"requests": {"memory": "8Gi"}}))
    wait_for(
        lambda: (api.get_cj(namespace, "greedy").get("status") or {}).get("phase") == "Failed",
        PATIENCE,
        message="Failed",
    )
    cj = api.get_cj(namespace, "greedy")
    status = cj["status"]
    assert (status["reason"], status["message"]) == ("InvalidResources", MESSAGE)
    assert posts_to(apiserver, namespace) == [], "no child may be created for resources the API server refuses"

    time.sleep(4)  # several re-checks (1 s) and past kopf's 5 s backoff from the start
    assert api.get_cj(namespace, "greedy")["metadata"]["resourceVersion"] == cj["metadata"]["resourceVersion"]
    failed = [e for e in api.list("Event", namespace) if e["reason"] == "InvalidResources"]
    assert len(failed) == 1 and failed[0]["type"] == "Warning" and failed[0]["message"] == MESSAGE
    labels = {"reason": "InvalidResources"}
    after = operator.metrics()
    assert (
        metric_value(after, "kondense_jobs_failed_total", labels)
        == metric_value(before, "kondense_jobs_failed_total", labels) + 1
    )
    assert posts_to(apiserver, namespace) == []

    # within the limit, the same operator makes the job's children
    api.create_cj(namespace, cj_manifest("modest", namespace, resources={"requests": {"memory": "4096Mi"}}))
    wait_for(lambda: api.get("Job", namespace, "modest-s1"), PATIENCE, message="the modest job's Job")
    (c,) = api.get("Job", namespace, "modest-s1")["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"requests": {"memory": "4096Mi"}, "limits": {"memory": "4Gi"}}
    assert operator.healthy()
