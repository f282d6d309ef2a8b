"""Restarts after infrastructure losses, and Kueue admission: the pure decision (restarts.decide)
for each kind of loss or failure, then the real operator against the API emulator, the tests
playing the Job controller and the kubelet (an evicted pod, the Job failing as its controller
would, the next Job's pods)."""

from __future__ import annotations

import json
import signal

import pytest
import yaml

from kondense.job import spec as spec_mod
from kondense_operator import children, restarts
from kondense_operator import status as st
from kondense_operator.children import child_name, job_name
from kondense_operator.config import WorkerConfig

from .conftest import (
    PATIENCE,
    REPO,
    Api,
    ApiServer,
    OperatorProcess,
    cj_manifest,
    metric_value,
    summary,
    wait_for,
    write_kubeconfig,
)

pytestmark = pytest.mark.timeout(300)

EVICTED = {"reason": "Evicted", "message": "The node was low on resource: memory."}
PEER_GONE = json.dumps({"stage": 1, "error": "RuntimeError: [gloo] Connection closed by peer [10.0.0.7]:29500"})


def _spec(**fields) -> spec_mod.JobSpec:
    manifest = cj_manifest("j", "ns", **fields)
    manifest["metadata"]["uid"] = "u"
    return spec_mod.parse_for_kubernetes(manifest).spec


def _pod(index: int, phase: str = "Running", state: dict | None = None, **status) -> dict:
    return {
        "metadata": {"name": f"j-s1-{index}-x", "labels": {children.INDEX_LABEL: str(index)}},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "worker", "state": state or {"running": {}}}],
            **status,
        },
    }


def _disrupted(index: int, reason: str) -> dict:
    cond = {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": f"by {reason}"}
    return _pod(index, "Failed", {"terminated": {"exitCode": 143}}, conditions=[cond])


def _failed_job(reason: str = "BackoffLimitExceeded", message: str = "backoff limit") -> dict:
    return {
        "kind": "Job",
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}]},
    }


RUNNING_JOB = {"kind": "Job", "status": {"active": 2}}
ERRORED = _pod(0, "Failed", {"terminated": {"exitCode": 1, "message": PEER_GONE}})
OOM = _pod(1, "Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})


def _decide(job: dict, pods: list[dict], restarts_so_far: int = 0, **spec) -> restarts.Decision:
    outcome = st.observe(job, pods)
    assert outcome.state == "failed", outcome
    return restarts.decide(job, pods, outcome, _spec(**spec), restarts_so_far)


@pytest.mark.parametrize(
    "lost, reason",
    [
        (_pod(1, "Failed", **EVICTED), "Evicted"),
        (_pod(1, "Failed", reason="Preempted", message="preempted"), "Preempted"),
        (_pod(1, "Failed", reason="NodeLost", message="node gone"), "NodeLost"),
        (_pod(1, "Failed", reason="Terminated", message="imminent node shutdown"), "NodeShutdown"),
        (_disrupted(1, "PreemptionByScheduler"), "Preempted"),
        (_disrupted(1, "EvictionByEvictionAPI"), "Evicted"),
        (_disrupted(1, "DeletionByTaintManager"), "NodeLost"),
        (_disrupted(1, "DeletionByPodGC"), "NodeLost"),
        (_disrupted(1, "SomethingNew"), "Disrupted"),
    ],
)
def test_a_lost_pod_restarts_the_stage_even_where_its_peer_then_errored(lost, reason):
    # worker 0's collective broke when worker 1 went: its error is the loss's consequence
    decision = _decide(_failed_job(), [ERRORED, lost])
    assert (decision.action, decision.reason) == (restarts.RESTART, reason)
    assert "worker 1" in decision.message and lost["metadata"]["name"] in decision.message


def test_the_jobs_own_record_of_a_disruption_restarts_it_when_the_pod_is_gone():
    job = _failed_job(
        "PodFailurePolicy", "Pod ns/j-s1-1-x has condition DisruptionTarget matching FailJob rule at index 0"
    )
    decision = _decide(job, [ERRORED])
    assert (decision.action, decision.reason) == (restarts.RESTART, "Disrupted")


def test_mpijob_eviction_restarts_it():
    mj = {
        "kind": "MPIJob",
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "MPIJobEvicted", "message": "1/2 workers are evicted"}
            ]
        },
    }
    decision = _decide(mj, [])
    assert (decision.action, decision.reason, decision.message) == (
        restarts.RESTART,
        "MPIJobEvicted",
        "1/2 workers are evicted",
    )


@pytest.mark.parametrize(
    "job, pods, reason",
    [
        (_failed_job(), [ERRORED, _pod(1, "Failed", {"terminated": {"exitCode": 1}})], "WorkerError"),
        (
            _failed_job(),
            [_pod(0, "Failed", {"terminated": {"exitCode": 1, "message": "Traceback..."}})],
            "BackoffLimitExceeded",
        ),
        (
            _failed_job("DeadlineExceeded", "Job was active longer than specified deadline"),
            [_disrupted(1, "DeletionByPodGC")],
            "DeadlineExceeded",
        ),
        (RUNNING_JOB, [_pod(0, "Pending", {"waiting": {"reason": "ErrImagePull"}})], "ImagePullBackOff"),
        (RUNNING_JOB, [OOM], "OOMKilled"),  # restartOnOOMKilled false: at once, as before
    ],
)
def test_other_failures_are_final(job, pods, reason):
    decision = _decide(job, pods)
    assert (decision.action, decision.reason) == (restarts.FAIL, reason)


def test_oomkilled_restarts_only_with_restart_on_oomkilled():
    assert _decide(_failed_job(), [OOM]).action == restarts.FAIL
    decision = _decide(_failed_job(), [OOM], restartOnOOMKilled=True)
    assert (decision.action, decision.reason) == (restarts.RESTART, "OOMKilled")


def test_nothing_is_decided_while_the_attempt_still_runs():
    # the Job has not failed yet: a peer's loss may still show, and old ranks must stop before new ones start
    assert _decide(RUNNING_JOB, [ERRORED, _pod(1)]).action == restarts.WAIT
    assert _decide(RUNNING_JOB, [OOM], restartOnOOMKilled=True).action == restarts.WAIT
    # failed, but a pod of the attempt is still running (terminating)
    assert _decide(_failed_job(), [_pod(0), _pod(1, "Failed", **EVICTED)]).action == restarts.WAIT


def test_the_budget_is_spec_max_restarts():
    lost = [_pod(1, "Failed", **EVICTED)]
    assert _decide(_failed_job(), lost, 2, maxRestarts=3).action == restarts.RESTART
    decision = _decide(_failed_job(), lost, 3, maxRestarts=3)
    assert (decision.action, decision.reason) == (restarts.FAIL, "Evicted")
    assert decision.message.endswith("not restarted after 3 restart(s) (spec.maxRestarts 3)")
    assert _decide(_failed_job(), lost, 0, maxRestarts=0).action == restarts.FAIL


def test_restart_reasons_are_a_bounded_label_set():
    assert set(restarts.REASONS) == {
        "Evicted",
        "Preempted",
        "NodeLost",
        "NodeShutdown",
        "Disrupted",
        "OOMKilled",
        "MPIJobEvicted",
    }


def test_kueue_example_builds_suspended_jobs_in_its_queue():
    (doc,) = [d for d in yaml.safe_load_all((REPO / "examples" / "kueue.yaml").read_text()) if d]
    doc["metadata"].update(namespace="ns", uid="u")
    job = spec_mod.parse_for_kubernetes(doc)
    assert job.spec.managed_by == spec_mod.MANAGED_BY_KUEUE and job.spec.active_deadline_s
    k8s_job = children.build_job(doc, job, 1, WorkerConfig())
    assert k8s_job["spec"]["suspend"] is True
    assert k8s_job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert k8s_job["spec"]["activeDeadlineSeconds"] == job.spec.active_deadline_s


# ---------------------------------------------------------------------------------------------
# the operator


def wait_status(api, ns: str, name: str, ok, timeout: float = PATIENCE) -> dict:
    return wait_for(lambda: (s := api.get_cj(ns, name).get("status") or {}) and ok(s) and s, timeout)


def evict(api: Api, pod: dict) -> None:
    """What the kubelet writes for a pod it evicted under node pressure (Kubernetes 1.26+)."""
    api.patch_status(
        "Pod",
        pod["metadata"]["namespace"],
        pod["metadata"]["name"],
        {
            "phase": "Failed",
            **EVICTED,
            "conditions": [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": EVICTED["message"],
                }
            ],
            "containerStatuses": [{"name": "worker", "state": {"terminated": {"exitCode": 137, "reason": "Error"}}}],
        },
    )


def lose_worker_1(api: Api, job: dict, pods: list[dict]) -> None:
    """Worker 1 is evicted; worker 0's next collective fails with an error of its own; the Job's
    controller fails the Job (its podFailurePolicy's FailJob rule for DisruptionTarget)."""
    evict(api, pods[1])
    api.set_pod(pods[0], "Failed", {"terminated": {"exitCode": 1, "reason": "Error", "message": PEER_GONE}})
    ns = job["metadata"]["namespace"]
    api.fail_job(
        job,
        "PodFailurePolicy",
        f"Pod {ns}/{pods[1]['metadata']['name']} has condition DisruptionTarget matching FailJob rule at index 0",
    )


def restarted_events(api, ns: str) -> list[dict]:
    return [e for e in api.list("Event", ns) if e["reason"] == "Restarted"]


def test_evicted_pod_gets_a_new_job_that_runs_to_success(api, operator, namespace):
    name = "evictable"
    before = metric_value(operator.metrics(), "kondense_stage_restarts_total", {"reason": "Evicted"})
    api.create_cj(namespace, cj_manifest(name, namespace))
    job = wait_for(lambda: api.get("Job", namespace, child_name(name, 1)), PATIENCE)
    assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    pods = api.start_job(job)
    wait_status(api, namespace, name, lambda s: s.get("phase") == "Running")
    lose_worker_1(api, job, pods)

    again = wait_for(lambda: api.get("Job", namespace, job_name(name, 1, 1)), PATIENCE, message="the stage's next Job")
    status = wait_status(api, namespace, name, lambda s: s.get("restarts") == 1)
    assert status["phase"] != "Failed"
    assert again["metadata"]["labels"][children.LABEL_ATTEMPT] == "1"
    env = {e["name"]: e["value"] for e in again["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KONDENSE_COORDINATOR"] == f"{job_name(name, 1, 1)}-0.{child_name(name, 1)}"
    wait_for(lambda: api.get("Job", namespace, child_name(name, 1)) is None, PATIENCE, message="the lost Job deleted")
    events = restarted_events(api, namespace)
    assert len(events) == 1 and "worker 1" in events[0]["message"] and "Evicted" in events[0]["message"]
    assert metric_value(operator.metrics(), "kondense_stage_restarts_total", {"reason": "Evicted"}) == before + 1

    # the new Job's pods (the old ones' Failed pods are still listed under the stage's labels)
    api.succeed_job(again, api.start_job(again), summary(1))
    job2 = wait_for(lambda: api.get("Job", namespace, job_name(name, 2, 1)), PATIENCE, message="stage 2's Job")
    api.succeed_job(job2, api.start_job(job2), summary(2))
    status = wait_status(api, namespace, name, lambda s: s.get("phase") == "Succeeded")
    assert status["restarts"] == 1
    assert len(restarted_events(api, namespace)) == 1


def test_no_restarts_left_fails_the_job(api, operator, namespace):
    name = "fragile"
    api.create_cj(namespace, cj_manifest(name, namespace, maxRestarts=0))
    job = wait_for(lambda: api.get("Job", namespace, child_name(name, 1)), PATIENCE)
    lose_worker_1(api, job, api.start_job(job))
    status = wait_status(api, namespace, name, lambda s: s.get("phase") == "Failed")
    assert status["reason"] == "Evicted"
    assert (
        status["message"].startswith("stage 1: worker 1")
        and "after 0 restart(s) (spec.maxRestarts 0)" in status["message"]
    )
    assert api.get("Job", namespace, job_name(name, 1, 1)) is None
    assert restarted_events(api, namespace) == []


def test_worker_error_is_never_restarted(api, operator, namespace):
    name = "buggy"
    api.create_cj(namespace, cj_manifest(name, namespace))
    job = wait_for(lambda: api.get("Job", namespace, child_name(name, 1)), PATIENCE)
    pods = api.start_job(job)
    msg = json.dumps({"stage": 1, "error": "model file /mnt/pvc/models/tiny.pt not found"})
    api.set_pod(pods[0], "Failed", {"terminated": {"exitCode": 1, "reason": "Error", "message": msg}})
    api.set_pod(pods[1], "Failed", {"terminated": {"exitCode": 1, "reason": "Error"}})
    api.fail_job(job)
    status = wait_status(api, namespace, name, lambda s: s.get("phase") == "Failed")
    assert status["reason"] == "WorkerError" and "not found" in status["message"]
    assert "restarts" not in status and restarted_events(api, namespace) == []
    assert [j["metadata"]["name"] for j in api.list("Job", namespace)] == [child_name(name, 1)]


def test_kueue_managed_jobs_are_left_suspended_for_kueue(api, operator, namespace):
    name = "queued"
    manifest = cj_manifest(name, namespace, managedBy="kueue.x-k8s.io", activeDeadlineSeconds=600)
    manifest["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a", "team": "a"}
    manifest["metadata"]["annotations"] = {"kueue.x-k8s.io/priority-class": "high"}
    api.create_cj(namespace, manifest)
    job = wait_for(lambda: api.get("Job", namespace, child_name(name, 1)), PATIENCE)
    assert job["spec"]["suspend"] is True and job["spec"]["activeDeadlineSeconds"] == 600
    assert (
        job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a" and "team" not in job["metadata"]["labels"]
    )
    assert job["spec"]["template"]["metadata"]["annotations"]["kueue.x-k8s.io/priority-class"] == "high"
    status = wait_status(api, namespace, name, lambda s: s.get("reason") == "WaitingForAdmission")
    assert status["phase"] == "Pending" and "LocalQueue team-a" in status["message"]
    # a few passes later, the operator still has not unsuspended it
    api.patch_status("Job", namespace, job["metadata"]["name"], {"ready": 0})
    wait_for(lambda: any(e["reason"] == "WaitingForAdmission" for e in api.list("Event", namespace)), PATIENCE)
    assert api.get("Job", namespace, job["metadata"]["name"])["spec"]["suspend"] is True
    patches = [
        (m, p)
        for t, m, p in _log(api)
        if t == "operator-token" and m == "PATCH" and p.endswith(f"/jobs/{job['metadata']['name']}")
    ]
    assert patches == []

    # Kueue admits it: unsuspends the Job, whose pods then run
    api.raw.request(
        "PATCH",
        api.raw.child_path("Job", namespace, job["metadata"]["name"]),
        {"spec": {"suspend": False}},
        "application/merge-patch+json",
    )
    api.start_job(job)
    wait_status(api, namespace, name, lambda s: s.get("phase") == "Running")


_server: list[ApiServer] = []


def _log(api) -> list[tuple[str, str, str]]:
    return _server[0].emulator.log


@pytest.fixture(scope="module")
def apiserver():
    server = ApiServer().start()
    _server[:] = [server]
    yield server
    server.stop()


def test_operator_killed_mid_restart_restarts_once(tmp_path):
    """The loss happens while no operator runs; the next one restarts the stage and is killed right
    after; a third one finds the count in the status and the new Job by its name: one restart."""
    server = ApiServer().start()
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        api, ns, name = Api(kubeconfig), "team-r", "durable"
        op = OperatorProcess(kubeconfig, tmp_path / "op1.log", ["--namespace", ns]).start()
        try:
            api.create_cj(ns, cj_manifest(name, ns))
            job = wait_for(lambda: api.get("Job", ns, child_name(name, 1)), PATIENCE)
            pods = api.start_job(job)
            wait_status(api, ns, name, lambda s: s.get("phase") == "Running")
        finally:
            op.stop(signal.SIGKILL)
        lose_worker_1(api, job, pods)

        op = OperatorProcess(kubeconfig, tmp_path / "op2.log", ["--namespace", ns]).start()
        try:
            wait_for(lambda: api.get("Job", ns, job_name(name, 1, 1)), PATIENCE, message="the restarted stage's Job")
            wait_for(lambda: restarted_events(api, ns), PATIENCE, message="the Restarted Event")  # kopf posts it later
        finally:
            op.stop(signal.SIGKILL)
        op = OperatorProcess(kubeconfig, tmp_path / "op3.log", ["--namespace", ns]).start()
        try:
            again = api.get("Job", ns, job_name(name, 1, 1))
            api.succeed_job(again, api.start_job(again), summary(1))
            wait_for(lambda: api.get("Job", ns, job_name(name, 2, 1)), PATIENCE, message="stage 2 after the restart")
            status = api.get_cj(ns, name)["status"]
        finally:
            op.stop()
        assert status["restarts"] == 1
        posts = [p for t, m, p in server.emulator.log if t == "operator-token" and m == "POST" and p.endswith("/jobs")]
        assert len(posts) == 3  # stage 1, its one re-creation, stage 2
        assert sorted(j["metadata"]["name"] for j in api.list("Job", ns)) == [
            job_name(name, 1, 1),
            job_name(name, 2, 1),
        ]
        assert len(restarted_events(api, ns)) == 1
    finally:
        server.stop()


def test_evicted_mpijob_gets_a_new_mpijob(tmp_path):
    """Backend mpi: the MPI operator's MPIJobEvicted is a loss like any other; the stage's next
    MPIJob is created once the MPI operator has stopped the lost one's pods."""
    server = ApiServer(mpijobs=True).start()
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        worker = tmp_path / "worker.yaml"
        worker.write_text("mpiJob: {enabled: true}\n")
        api, ns, name = Api(kubeconfig), "mpi", "evicted-mpi"
        op = OperatorProcess(kubeconfig, tmp_path / "op.log", ["--namespace", ns, "--worker-config", str(worker)])
        op.start()
        try:
            api.create_cj(ns, cj_manifest(name, ns, backend="mpi", stage=1, workers=2))
            mj = wait_for(lambda: api.get("MPIJob", ns, child_name(name, 1)), PATIENCE)
            launcher, workers = api.start_mpijob(mj)
            wait_status(api, ns, name, lambda s: s.get("phase") == "Running")
            # a worker's node goes: the MPI operator fails the MPIJob and removes the running pods
            for w in workers:
                api.delete("Pod", ns, w["metadata"]["name"])
            api.set_pod(
                launcher, "Failed", {"terminated": {"exitCode": 1, "reason": "Error", "message": "mpirun: lost"}}
            )
            api.fail_mpijob(mj, "MPIJobEvicted", "1/2 workers are evicted")
            again = wait_for(lambda: api.get("MPIJob", ns, job_name(name, 1, 1)), PATIENCE, message="the next MPIJob")
            assert (
                again["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["metadata"]["labels"][children.LABEL_ATTEMPT]
                == "1"
            )
            status = wait_status(api, ns, name, lambda s: s.get("restarts") == 1)
            assert status["phase"] != "Failed"
            wait_for(
                lambda: api.get("MPIJob", ns, child_name(name, 1)) is None, PATIENCE, message="the lost MPIJob deleted"
            )
            launcher, workers = api.start_mpijob(again)
            api.succeed_mpijob(again, launcher, workers, summary(1))
            status = wait_status(api, ns, name, lambda s: s.get("phase") == "Succeeded")
            assert status["restarts"] == 1
        finally:
            op.stop()
    finally:
        server.stop()
