"""Backend mpi end to end: `kondense-operator` with the worker config's mpiJob switch on, against an
API emulator that serves kubeflow.org/v2beta1 mpijobs (as with the MPI operator v2 installed); the
tests play the MPI operator (pods from the MPIJob's templates, its conditions) and the kubelet.
Then the two ways such a job cannot run: the CRD missing (404) and the switch off."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from kondense.job.worker_env import WorkerEnv
from kondense_operator import mpijob
from kondense_operator.children import child_name

from .conftest import Api, ApiServer, OperatorProcess, cj_manifest, metric_value, summary, wait_for, write_kubeconfig

# end to end (operator processes), like test_operator.py: make test-e2e
pytestmark = [pytest.mark.timeout(120), pytest.mark.e2e]


def worker_config(path: Path, enabled: bool = True) -> Path:
    path.write_text(
        yaml.safe_dump({"mpiJob": {"enabled": enabled, "launcherResources": {"requests": {"cpu": "250m"}}}})
    )
    return path


@pytest.fixture(scope="module")
def apiserver():
    """This module's API server serves mpijobs.kubeflow.org."""
    server = ApiServer(mpijobs=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(kubeconfig, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("operator")
    op = OperatorProcess(
        kubeconfig, tmp / "operator.log", ["--all-namespaces", "--worker-config", str(worker_config(tmp / "w.yaml"))]
    ).start()
    yield op
    op.stop()


def mpi_manifest(name: str, ns: str, **spec) -> dict:
    return cj_manifest(name, ns, **{"backend": "mpi", "workers": 2, "slotsPerWorker": 2, **spec})


def status_of(api, ns: str, name: str) -> dict:
    return api.get_cj(ns, name).get("status") or {}


def wait_phase(api, ns: str, name: str, phase: str, timeout: float = 20) -> dict:
    wait_for(lambda: status_of(api, ns, name).get("phase") == phase, timeout, message=f"{ns}/{name} phase {phase}")
    return status_of(api, ns, name)


def stage_mpijob(api, ns: str, name: str, stage: int, timeout: float = 20) -> dict:
    return wait_for(lambda: api.get("MPIJob", ns, child_name(name, stage)), timeout, message=f"stage {stage} MPIJob")


def test_mpijob_through_its_conditions_to_succeeded_with_metrics(api, operator, namespace):
    before = operator.metrics()
    name = "resnet.mpi"
    api.create_cj(namespace, mpi_manifest(name, namespace))
    mj = stage_mpijob(api, namespace, name, 1)

    # the MPIJob as built: owned, labelled, the launcher running `kondense worker`, workers sshd
    cj = api.get_cj(namespace, name)
    (ref,) = mj["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("CompressionJob", cj["metadata"]["uid"], True)
    assert (
        mj["metadata"]["labels"]["kondense.dev/job"] == name and mj["metadata"]["labels"]["kondense.dev/stage"] == "1"
    )
    spec = mj["spec"]
    assert spec["slotsPerWorker"] == 2 and spec["runPolicy"]["suspend"] is False
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["command"][:2] == ["kondense", "worker"]
    assert launcher["resources"] == {"requests": {"cpu": "250m"}}  # the worker config's launcherResources
    env = WorkerEnv.from_env({e["name"]: e["value"] for e in launcher["env"]})
    assert (env.backend, env.workers, env.slots, env.size) == ("mpi", 2, 2, 4)
    worker = spec["mpiReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2 and worker["template"]["spec"]["containers"][0]["command"][0] == "/usr/sbin/sshd"
    # the ConfigMap as for an Indexed Job; no Service (the MPI operator makes its own) and no Job
    assert "job.yaml" in api.get("ConfigMap", namespace, child_name(name, 1))["data"]
    assert api.list("Service", namespace) == [] and api.list("Job", namespace) == []
    assert api.get("MPIJob", namespace, child_name(name, 2)) is None, "stage 2 must wait for stage 1"

    # Created: the job is accepted, its pods not all up
    api.set_mpijob_status(mj, {"conditions": [api.mpi_condition("Created", "True", "MPIJobCreated")]})
    time.sleep(1)
    assert status_of(api, namespace, name)["phase"] == "Pending"
    # Running: the launcher and every worker run
    launcher_pod, workers = api.start_mpijob(mj)
    status = wait_phase(api, namespace, name, "Running")
    assert status["stage"] == 1
    # Succeeded: the launcher's termination message carries the stage summary
    api.succeed_mpijob(mj, launcher_pod, workers, summary(1))

    mj2 = stage_mpijob(api, namespace, name, 2)
    assert mj2["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"][-3:] == [
        "2",
        "--pvc-root",
        "/mnt/pvc",
    ]
    wait_for(lambda: status_of(api, namespace, name).get("stage") == 2, 10)
    assert set(status_of(api, namespace, name)["metrics"]) == {"original", "stage1", "enhancement"}
    launcher2, workers2 = api.start_mpijob(mj2)
    api.succeed_mpijob(mj2, launcher2, workers2, summary(2))

    status = wait_phase(api, namespace, name, "Succeeded")
    assert status["metrics"]["stage2"]["sizeMB"] == 0.25 and status["metrics"]["enhancement"]["size"] == 4.0
    assert status["artifacts"]["model"].startswith("pvc://")
    assert status["message"] == "compressed 3.0x (params), 4.0x (size) at 1.00 points"
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds == {"Created": "True", "Running": "False", "Succeeded": "True"}
    reasons = wait_for(
        lambda: (
            {e["reason"] for e in api.list("Event", namespace)} >= {"Stage2Succeeded", "Succeeded"}
            and {e["reason"] for e in api.list("Event", namespace)}
        ),
        10,
    )
    assert {"ConfigMapCreated", "MPIJobCreated", "Stage1Succeeded"} <= reasons
    after = operator.metrics()
    assert (
        metric_value(after, "kondense_jobs_succeeded_total")
        == metric_value(before, "kondense_jobs_succeeded_total") + 1
    )
    assert metric_value(after, "kondense_stage_duration_seconds_count", {"stage": "2"}) >= 1
    assert metric_value(after, "kondense_job_info", {"backend": "mpi", "stage": "2", "phase": "Succeeded"}) >= 1


def _backoff(api, mj, launcher, workers):
    log = "mpirun detected that one or more processes exited with non-zero status\nrank 3 died"
    api.set_pod(launcher, "Failed", {"terminated": {"exitCode": 1, "reason": "Error", "message": log}})
    api.fail_mpijob(mj)


def _worker_error(api, mj, launcher, workers):
    msg = json.dumps({"stage": 1, "error": "model file /mnt/pvc/models/tiny.pt not found"})
    api.set_pod(launcher, "Failed", {"terminated": {"exitCode": 1, "reason": "Error", "message": msg}})
    api.fail_mpijob(mj)


def _evicted(api, mj, launcher, workers):
    api.fail_mpijob(mj, "MPIJobEvicted", "1/2 workers are evicted")


def _oom(api, mj, launcher, workers):
    api.set_pod(workers[1], "Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})


@pytest.mark.parametrize(
    "fail, reason, words",
    [
        (_backoff, "BackoffLimitExceeded", "the launcher exited 1: mpirun detected"),
        (_worker_error, "WorkerError", "the launcher: model file"),
        (_evicted, "MPIJobEvicted", "1/2 workers are evicted"),
        (_oom, "OOMKilled", "worker 1"),
    ],
)
def test_failed_mpijob_fails_the_job_with_its_reason(api, operator, namespace, fail, reason, words):
    before = metric_value(operator.metrics(), "kondense_jobs_failed_total", {"reason": reason})
    # no restarts left: an eviction fails the job too (test_restarts.py: with some, the stage is re-created)
    api.create_cj(namespace, mpi_manifest("failing", namespace, maxRestarts=0))
    mj = stage_mpijob(api, namespace, "failing", 1)
    launcher, workers = api.start_mpijob(mj)
    wait_phase(api, namespace, "failing", "Running")
    fail(api, mj, launcher, workers)
    status = wait_phase(api, namespace, "failing", "Failed")
    assert status["reason"] == reason and words in status["message"], status
    assert status["message"].startswith("stage 1:")
    assert api.get("MPIJob", namespace, child_name("failing", 2)) is None
    assert metric_value(operator.metrics(), "kondense_jobs_failed_total", {"reason": reason}) == before + 1


def test_worker_that_cannot_pull_its_image_suspends_the_mpijob(api, operator, namespace):
    api.create_cj(namespace, mpi_manifest("unpullable", namespace))
    mj = stage_mpijob(api, namespace, "unpullable", 1)
    _, workers = api.make_mpi_pods(mj)
    api.set_pod(workers[0], "Pending", {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}})
    status = wait_phase(api, namespace, "unpullable", "Failed")
    assert status["reason"] == "ImagePullBackOff" and "worker 0" in status["message"]
    # the MPI operator then deletes the pods, which stop holding their nodes
    mj = api.get("MPIJob", namespace, mj["metadata"]["name"])
    assert mj["spec"]["runPolicy"]["suspend"] is True


def mpi_suspend_resume_succeed(api, ns: str, name: str) -> None:
    """A backend-mpi job created suspended, resumed, suspended while running, resumed, run to
    success: spec.suspend drives the MPIJob's spec.runPolicy.suspend both ways."""
    api.create_cj(ns, mpi_manifest(name, ns, stage=1, suspend=True))
    mj = stage_mpijob(api, ns, name, 1)
    assert mj["spec"]["runPolicy"]["suspend"] is True
    api.set_mpijob_status(mj, {"conditions": [api.mpi_condition("Suspended", "True", "MPIJobSuspended")]})
    status = wait_phase(api, ns, name, "Suspended")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "True"

    def run_policy_suspend() -> bool:
        return api.get("MPIJob", ns, mj["metadata"]["name"])["spec"]["runPolicy"]["suspend"]

    api.patch_cj(ns, name, {"spec": {"suspend": False}})
    wait_for(lambda: run_policy_suspend() is False, 20, message="MPIJob resumed")
    launcher, workers = api.start_mpijob(mj)
    wait_phase(api, ns, name, "Running")

    api.patch_cj(ns, name, {"spec": {"suspend": True}})
    wait_for(lambda: run_policy_suspend() is True, 20, message="MPIJob suspended")
    wait_phase(api, ns, name, "Suspended")

    api.patch_cj(ns, name, {"spec": {"suspend": False}})
    wait_for(lambda: run_policy_suspend() is False, 20, message="MPIJob resumed again")
    wait_phase(api, ns, name, "Running")
    api.succeed_mpijob(mj, launcher, workers, summary(1))
    status = wait_phase(api, ns, name, "Succeeded")
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Created": "True",
        "Suspended": "False",
        "Running": "False",
        "Succeeded": "True",
    }


def test_suspend_and_resume(api, operator, namespace):
    mpi_suspend_resume_succeed(api, namespace, "pausable")


# ---------------------------------------------------------------------------------------------
# backend mpi cannot run here: no MPIJob CRD, or the switch off


@pytest.fixture(scope="module")
def no_crd(tmp_path_factory):
    """An API server without the MPIJob CRD, and two operators: one with the switch on (watching
    namespace `missing`), one with it off (watching `off`), each with its own token."""
    server = ApiServer(mpijobs=False).start()
    tmp = tmp_path_factory.mktemp("no-crd")
    kubeconfig = write_kubeconfig(tmp / "kubeconfig", server.url)
    on = OperatorProcess(
        kubeconfig,
        tmp / "on.log",
        ["--namespace", "missing", "--worker-config", str(worker_config(tmp / "on.yaml"))],
        token="operator-on",
    )
    off = OperatorProcess(kubeconfig, tmp / "off.log", ["--namespace", "off"], token="operator-off")
    try:
        on.start()
        off.start()
        yield server, Api(kubeconfig), on, off
    finally:
        on.stop()
        off.stop()
        server.stop()


def posts(server, token: str, suffix: str) -> int:
    return sum(1 for t, m, p in server.emulator.log if t == token and m == "POST" and p.endswith(suffix))


def test_missing_crd_fails_the_job_once_and_the_operator_goes_on(no_crd):
    server, api, on, _ = no_crd
    ns = "missing"
    before = metric_value(on.metrics(), "kondense_jobs_failed_total", {"reason": "MPIJobCRDMissing"})
    api.create_cj(ns, mpi_manifest("nocrd", ns))
    status = wait_phase(api, ns, "nocrd", "Failed")
    assert status["reason"] == "MPIJobCRDMissing"
    assert status["message"] == mpijob.crd_missing_message(1, ns)
    assert "MPI operator v2" in status["message"] and "kubeflow/mpi-operator" in status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "MPIJobCRDMissing" and failed["status"] == "True"
    time.sleep(6.5)  # past kopf's 5 s backoff: a retry would have come by now
    assert posts(server, on.token, "/namespaces/missing/mpijobs") == 1, "a missing CRD must not be retried"
    events = [e for e in api.list("Event", ns) if e["reason"] == "MPIJobCRDMissing"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert metric_value(on.metrics(), "kondense_jobs_failed_total", {"reason": "MPIJobCRDMissing"}) == before + 1
    # kopf could not watch mpijobs, said so, and serves everything else: a torch job runs
    assert "Unresolved resources cannot be served" in on.log()
    assert on.healthy()
    api.create_cj(ns, cj_manifest("torch", ns))
    job = wait_for(lambda: api.get("Job", ns, child_name("torch", 1)), 20, message="the torch job's Job")
    assert job["spec"]["completionMode"] == "Indexed"


def test_switch_off_fails_the_job_without_touching_mpijobs(no_crd):
    server, api, _, off = no_crd
    ns = "off"
    api.create_cj(ns, mpi_manifest("nompi", ns))
    status = wait_phase(api, ns, "nompi", "Failed")
    assert status["reason"] == "MPIJobDisabled" and status["message"] == mpijob.disabled_message()
    assert "workers.mpiJob.enabled=true" in status["message"]
    time.sleep(1)
    assert api.list("ConfigMap", ns) == [] and api.list("Job", ns) == []
    assert any(e["reason"] == "MPIJobDisabled" and e["type"] == "Warning" for e in api.list("Event", ns))
    # an operator without the switch needs, and uses, no rights on mpijobs (the chart grants none)
    assert not [p for t, _, p in server.emulator.log if t == off.token and "kubeflow.org" in p]
    assert metric_value(off.metrics(), "kondense_jobs_failed_total", {"reason": "MPIJobDisabled"}) == 1
