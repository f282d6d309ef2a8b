"""The API server refuses a child (issue #14): 422 fails the job once, 403 waits for an admin
with a condition and a slow retry, a 5xx is retried as any error. kmock validates and authorises
nothing, so the emulator is told which request to refuse and with what Status body (the bodies are
a real API server's). Its own operator, with a 1 s retry after a 403 so that retries happen within
a test."""

from __future__ import annotations

import time

import pytest

from kondense_operator.children import child_name

from .conftest import Refusal, cj_manifest, metric_value, operator_process, wait_for

pytestmark = pytest.mark.timeout(120)

FIELD = "spec.template.spec.containers[0].resources.requests"
PROBLEM = 'Invalid value: "2": must be less than or equal to cpu limit'


def invalid_body(name: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f'Job.batch "{name}" is invalid: {FIELD}: {PROBLEM}',
        "reason": "Invalid",
        "details": {
            "name": name,
            "group": "batch",
            "kind": "Job",
            "causes": [{"reason": "FieldValueInvalid", "message": PROBLEM, "field": FIELD}],
        },
        "code": 422,
    }


def forbidden_body(namespace: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": 'jobs.batch is forbidden: User "system:serviceaccount:kondense:kondense-operator" cannot create '
        f'resource "jobs" in API group "batch" in the namespace "{namespace}"',
        "reason": "Forbidden",
        "details": {"group": "batch", "kind": "jobs"},
        "code": 403,
    }


@pytest.fixture(scope="module")
def operator(kubeconfig, tmp_path_factory):
    yield from operator_process(kubeconfig, tmp_path_factory, "--all-namespaces", "--forbidden-retry-seconds", "1")


def jobs_path(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def job_creates(apiserver, namespace: str) -> int:
    return sum(
        1
        for token, method, path in apiserver.emulator.log
        if token == "operator-token" and method == "POST" and path == jobs_path(namespace)
    )


def events(api, namespace: str, reason: str) -> list[dict]:
    return [e for e in api.list("Event", namespace) if e["reason"] == reason]


def status_of(api, namespace: str, name: str) -> dict:
    return api.get_cj(namespace, name).get("status") or {}


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def wait_for_condition(api, namespace: str, name: str, type_: str, value: str, timeout: float) -> None:
    wait_for(
        lambda: condition(status_of(api, namespace, name), type_).get("status") == value,
        timeout,
        message=f"condition {type_} {value}",
    )


def test_invalid_child_fails_the_job_once_and_the_operator_goes_on(apiserver, api, operator, namespace):
    before = operator.metrics()
    refused = child_name("invalid", 1)
    apiserver.emulator.refusals.append(Refusal("POST", jobs_path(namespace), 422, invalid_body(refused), name=refused))
    api.create_cj(namespace, cj_manifest("invalid", namespace))
    wait_for(lambda: status_of(api, namespace, "invalid").get("phase") == "Failed", 20, message="phase Failed")
    status = status_of(api, namespace, "invalid")
    assert status["reason"] == "InvalidChild"
    assert status["message"] == (f"stage 1: the API server refused Job {refused} (422 Invalid): {FIELD}: {PROBLEM}"), (
        status["message"]
    )
    failed = condition(status, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "InvalidChild"

    time.sleep(6.5)  # past kopf's 5 s backoff: a retry would have come by now
    assert job_creates(apiserver, namespace) == 1, "a 422 must not be retried"
    (event,) = events(api, namespace, "InvalidChild")
    assert event["type"] == "Warning" and event["message"] == status["message"]
    assert len(events(api, namespace, "Created")) == 1
    assert not [e for e in api.list("Event", namespace) if e["reason"] == "Logging" and "failed" in e["message"]]
    after = operator.metrics()
    for name, labels in (
        ("kondense_jobs_failed_total", {"reason": "InvalidChild"}),
        ("kondense_child_refusals_total", {"code": "422"}),
        ("kondense_jobs_created_total", None),
    ):
        assert metric_value(after, name, labels) == metric_value(before, name, labels) + 1, name

    # the operator is still there for the next (valid) job in the same namespace
    api.create_cj(namespace, cj_manifest("valid", namespace))
    job = wait_for(lambda: api.get("Job", namespace, child_name("valid", 1)), 20, message="the valid job's Job")
    assert job["spec"]["completionMode"] == "Indexed"
    wait_for(lambda: status_of(api, namespace, "valid").get("phase") == "Pending", 10, message="valid: Pending")
    assert operator.healthy()


def test_forbidden_child_waits_with_a_condition_until_granted(apiserver, api, operator, namespace):
    before = operator.metrics()
    refusal = Refusal("POST", jobs_path(namespace), 403, forbidden_body(namespace))
    apiserver.emulator.refusals.append(refusal)
    api.create_cj(namespace, cj_manifest("guarded", namespace))
    wait_for_condition(api, namespace, "guarded", "Forbidden", "True", 20)
    status = status_of(api, namespace, "guarded")
    assert status["phase"] == "Pending" and status["reason"] == "Forbidden"
    forbidden = condition(status, "Forbidden")
    assert forbidden["reason"] == "Forbidden"
    assert forbidden["message"].startswith(
        f"the operator may not create jobs.batch in namespace {namespace} (403 Forbidden)"
    ), forbidden["message"]
    assert status["message"] == forbidden["message"]

    # retried (every second here), but announced and counted once
    wait_for(lambda: job_creates(apiserver, namespace) >= 3, 20, message="retries after a 403")
    (event,) = events(api, namespace, "Forbidden")
    assert event["type"] == "Warning" and event["message"] == forbidden["message"]
    assert len(events(api, namespace, "Created")) == 1
    assert not [e for e in api.list("Event", namespace) if "failed temporarily" in e["message"]]
    after = operator.metrics()
    assert metric_value(after, "kondense_child_refusals_total", {"code": "403"}) == (
        metric_value(before, "kondense_child_refusals_total", {"code": "403"}) + 1
    )
    assert metric_value(after, "kondense_jobs_created_total") == metric_value(before, "kondense_jobs_created_total") + 1
    assert status_of(api, namespace, "guarded")["phase"] == "Pending"

    # an admin grants the right: the next retry goes through, the condition turns False once
    refusal.times = 0
    job = wait_for(lambda: api.get("Job", namespace, child_name("guarded", 1)), 20, message="the Job once granted")
    assert job["spec"]["completionMode"] == "Indexed"
    wait_for_condition(api, namespace, "guarded", "Forbidden", "False", 10)
    status = status_of(api, namespace, "guarded")
    assert status["phase"] == "Pending" and status["reason"] == "Stage1Pending"
    time.sleep(1.5)
    assert len(events(api, namespace, "Forbidden")) == 1
    assert len(events(api, namespace, "Allowed")) == 1


def test_server_error_is_retried_and_counted_once(apiserver, api, operator, namespace):
    before = operator.metrics()
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcdserver: timeout", "code": 500}
    apiserver.emulator.refusals.append(Refusal("POST", jobs_path(namespace), 500, body, times=1))
    api.create_cj(namespace, cj_manifest("flaky", namespace))
    wait_for(lambda: api.get("Job", namespace, child_name("flaky", 1)), 30, message="the Job after a retry")
    assert job_creates(apiserver, namespace) == 2
    status = status_of(api, namespace, "flaky")
    assert status["phase"] == "Pending" and not condition(status, "Failed")
    assert len(events(api, namespace, "Created")) == 1
    after = operator.metrics()
    assert metric_value(after, "kondense_jobs_created_total") == metric_value(before, "kondense_jobs_created_total") + 1


def test_invalid_patch_of_a_child_fails_the_job(apiserver, api, operator, namespace):
    """A 422 on patching the stage's Job (here: resuming it) fails the job as a 422 on creating it does."""
    name = "resumable"
    job_name = child_name(name, 1)
    api.create_cj(namespace, cj_manifest(name, namespace, suspend=True))
    wait_for(lambda: status_of(api, namespace, name).get("phase") == "Suspended", 20, message="Suspended")
    apiserver.emulator.refusals.append(
        Refusal("PATCH", f"{jobs_path(namespace)}/{job_name}", 422, invalid_body(job_name))
    )
    api.patch_cj(namespace, name, {"spec": {"suspend": False}})
    wait_for(lambda: status_of(api, namespace, name).get("phase") == "Failed", 20, message="phase Failed")
    status = status_of(api, namespace, name)
    assert status["reason"] == "InvalidChild"
    assert status["message"].startswith(f"stage 1: the API server refused Job {job_name} (422 Invalid): {FIELD}")
    assert len(events(api, namespace, "InvalidChild")) == 1


def test_refusal_messages_without_causes_or_json():
    from kondense_operator.kube import ApiError, request_attributes
    from kondense_operator.refusals import forbidden_message, invalid_message

    plain = ApiError(422, "POST", "/api/v1/namespaces/a/services", "not json")
    assert (
        invalid_message(2, "Service x-s2", plain)
        == "stage 2: the API server refused Service x-s2 (422 Invalid): not json"
    )
    no_field = ApiError(422, "POST", "/x", '{"reason":"Invalid","details":{"causes":[{"message":"bad"}]}}')
    assert invalid_message(1, "", no_field).endswith("refused a child (422 Invalid): bad")
    assert forbidden_message(ApiError(403, "GET", "/api/v1/namespaces/a/pods?labelSelector=x", "{}"), 300).startswith(
        "the operator may not list pods in namespace a (403 Forbidden)"
    )
    assert request_attributes("PATCH", "/apis/kondense.dev/v1alpha1/namespaces/b/compressionjobs/j/status") == (
        "patch",
        "compressionjobs.kondense.dev/status",
        "b",
    )
    assert request_attributes("GET", "/apis/batch/v1/jobs?watch=true") == ("watch", "jobs.batch", "")
