"""Backend mpi's pure builders (kondense_operator.mpijob) and status rules (status.observe_mpijob):
the MPIJob a stage gets, and what its conditions and pods mean for the CompressionJob. No API server."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from kondense.job import spec as spec_mod
from kondense.job.worker_env import WorkerEnv
from kondense_operator import children, mpijob, refusals, resources
from kondense_operator import status as st
from kondense_operator.config import WorkerConfig
from kondense_operator.kube import ApiError

from .conftest import cj_manifest, summary

DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MPI = {"enabled": True}


def body(name: str = "job", **spec) -> dict:
    b = cj_manifest(name, "ns", **{"backend": "mpi", **spec})
    b["metadata"]["uid"] = "uid-1"
    return b


def build(b: dict, stage: int = 1, cfg: WorkerConfig | None = None) -> tuple[dict, dict]:
    cm, mj = mpijob.build_children(b, spec_mod.parse(b), stage, cfg or WorkerConfig(mpi_job=MPI))
    return cm, mj


def replica(mj: dict, kind: str) -> tuple[dict, dict, dict]:
    """(replica spec, pod spec, its one container)"""
    r = mj["spec"]["mpiReplicaSpecs"][kind]
    (c,) = r["template"]["spec"]["containers"]
    return r, r["template"]["spec"], c


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_children_are_the_configmap_and_one_mpijob():
    b = body(workers=3, slotsPerWorker=2, stage=2)
    cm, mj = build(b, stage=2)
    assert cm == children.build_configmap(b, spec_mod.parse(b), 2)
    assert spec_mod.parse(yaml.safe_load(cm["data"]["job.yaml"])).spec.backend == "mpi"
    assert (mj["apiVersion"], mj["kind"]) == ("kubeflow.org/v2beta1", "MPIJob")
    # named, labelled and owned as the Indexed Job of the other backends would be
    job = children.build_job(b, spec_mod.parse(b), 2, WorkerConfig())
    assert mj["metadata"] == job["metadata"]
    assert mj["metadata"]["name"] == children.child_name("job", 2) == cm["metadata"]["name"]
    (ref,) = mj["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "name": "job",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    s = mj["spec"]
    assert s["slotsPerWorker"] == 2 and s["runLauncherAsWorker"] is False
    assert s["sshAuthMountPath"] == "/home/kondense/.ssh" and s["mpiImplementation"] == "OpenMPI"
    assert s["launcherCreationPolicy"] == "WaitForWorkersReady"
    assert s["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 0, "suspend": False}
    assert s["mpiReplicaSpecs"]["Launcher"]["replicas"] == 1
    assert s["mpiReplicaSpecs"]["Worker"]["replicas"] == 3
    for kind in ("Launcher", "Worker"):
        r, pod, _ = replica(mj, kind)
        assert r["restartPolicy"] == "Never"  # the MPI operator's launcher default would be OnFailure
        labels = r["template"]["metadata"]["labels"]
        assert labels == {**children.labels("job", 2), children.LABEL_ATTEMPT: "0", mpijob.ROLE_LABEL: kind.lower()}
        assert r["template"]["metadata"]["annotations"] == {"kondense.dev/compressionjob": "job"}
        # the MPI operator sets these itself, and warns about a template's restartPolicy
        assert not {"restartPolicy", "hostname", "subdomain"} & set(pod)


def test_mpijob_meets_the_mpi_operators_validation():
    """What kubeflow/mpi-operator's controller checks (pkg/apis/kubeflow/validation) before it runs
    an MPIJob, restated: it would otherwise only emit an Event and never start the pods."""
    for name, workers in (("job", 1), ("a" * 253, 4), ("x.y", 256)):  # 256: the most spec.workers allows
        _, mj = build(body(name, workers=workers))
        s = mj["spec"]
        worker_host = f"{mj['metadata']['name']}-worker-{workers - 1}"
        assert DNS1035.fullmatch(worker_host) and len(worker_host) <= 63, worker_host
        assert isinstance(s["slotsPerWorker"], int) and s["slotsPerWorker"] >= 0
        assert s["runPolicy"]["cleanPodPolicy"] in ("None", "Running", "All")
        assert s["runPolicy"]["backoffLimit"] >= 0
        assert s["sshAuthMountPath"] and s["mpiImplementation"] in ("OpenMPI", "Intel", "MPICH")
        for r in s["mpiReplicaSpecs"].values():
            assert isinstance(r["replicas"], int) and r["replicas"] >= 1
            assert r["restartPolicy"] in ("Never", "OnFailure")
            assert r["template"]["spec"]["containers"]
        assert s["mpiReplicaSpecs"]["Launcher"]["replicas"] == 1


def test_launcher_runs_the_worker_command_as_the_mpi_launcher():
    b = body(workers=2, slotsPerWorker=4, device="cuda", resources={"limits": {"memory": "8Gi"}})
    cfg = WorkerConfig(
        mpi_job={"enabled": True, "launcherResources": {"requests": {"cpu": "250m"}}},
        node_selector={"pool": "ml"},
        gpu_node_selector={"gpu": "yes"},
        gpu_tolerations=[{"key": "gpu"}],
        tolerations=[{"key": "ml"}],
        service_account_name="ml-worker",
    )
    _, mj = build(b, 2, cfg)
    _, pod, c = replica(mj, "Launcher")
    job = children.build_job(b, spec_mod.parse(b), 2, cfg)
    (job_container,) = job["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "launcher"
    assert c["command"] == job_container["command"]
    assert c["command"] == [
        "kondense",
        "worker",
        "--job",
        "/etc/kondense/job.yaml",
        "--stage",
        "2",
        "--pvc-root",
        "/mnt/pvc",
    ]
    env = env_of(c)
    assert env["KONDENSE_BACKEND"] == "mpi" and env["KONDENSE_WORKERS"] == "2" and env["KONDENSE_SLOTS"] == "4"
    assert env["KONDENSE_WORKER_INDEX"] == "0"  # the launcher is worker 0, the one that runs mpirun
    assert "KONDENSE_COORDINATOR" not in env and "KONDENSE_PORT" not in env  # rank 0 picks where ranks meet
    assert env["KONDENSE_HOME"] == "/var/cache/kondense" and env["HOME"] == "/tmp"
    parsed = WorkerEnv.from_env(env)  # what `kondense worker` reads there
    assert (parsed.index, parsed.size, parsed.backend) == (0, 8, "mpi")
    # the launcher writes the summary; it runs mpirun, not ranks: no GPU, no claims, CPU placement
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["resources"] == {"requests": {"cpu": "250m"}}
    assert pod["nodeSelector"] == {"pool": "ml"} and pod["tolerations"] == [{"key": "ml"}]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/etc/kondense", "/tmp"}
    job_pod = job["spec"]["template"]["spec"]
    for key in ("securityContext", "automountServiceAccountToken", "enableServiceLinks", "serviceAccountName"):
        assert pod[key] == job_pod[key], key
    assert c["securityContext"] == job_container["securityContext"]


def test_workers_run_sshd_with_the_jobs_volumes_resources_and_placement():
    b = body(workers=2, slotsPerWorker=4, device="cuda", resources={"limits": {"memory": "8Gi"}})
    cfg = WorkerConfig(
        mpi_job=MPI,
        image="reg/kondense:1",
        image_pull_policy="Always",
        zoo_cache_claim="zoo",
        node_selector={"pool": "ml"},
        gpu_node_selector={"gpu": "yes"},
        gpu_tolerations=[{"key": "gpu"}],
        resources={"requests": {"cpu": "2"}},
    )
    _, mj = build(b, 1, cfg)
    _, pod, c = replica(mj, "Worker")
    job = children.build_job(b, spec_mod.parse(b), 1, cfg)
    job_pod = job["spec"]["template"]["spec"]
    (job_container,) = job_pod["containers"]
    assert c["name"] == "worker" and (c["image"], c["imagePullPolicy"]) == ("reg/kondense:1", "Always")
    assert c["command"] == [
        "/usr/sbin/sshd",
        "-D",
        "-e",
        "-f",
        mpijob.SSHD_CONFIG,
        "-h",
        "/home/kondense/.ssh/id_rsa",
        "-o",
        "AuthorizedKeysFile=/home/kondense/.ssh/authorized_keys",
    ]
    assert c["ports"] == [{"name": "ssh", "containerPort": 2222, "protocol": "TCP"}]
    assert c["readinessProbe"]["tcpSocket"] == {"port": 2222}
    # the ranks run here: the Indexed Job's volumes, GPUs, placement and security, unchanged
    assert pod["volumes"] == job_pod["volumes"] and c["volumeMounts"] == job_container["volumeMounts"]
    assert c["resources"] == job_container["resources"]
    assert c["resources"] == {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": 4}}
    assert pod["nodeSelector"] == {"pool": "ml", "gpu": "yes"} and pod["tolerations"] == [{"key": "gpu"}]
    assert c["securityContext"] == job_container["securityContext"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    for key in ("securityContext", "automountServiceAccountToken", "enableServiceLinks"):
        assert pod[key] == job_pod[key], key
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"] is True
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"models", "zoo"}


def test_ssh_auth_mount_path_reaches_the_mpijob_and_sshd():
    _, mj = build(body(), cfg=WorkerConfig(mpi_job={"enabled": True, "sshAuthMountPath": "/home/mpiuser/.ssh"}))
    assert mj["spec"]["sshAuthMountPath"] == "/home/mpiuser/.ssh"
    _, _, c = replica(mj, "Worker")
    assert "/home/mpiuser/.ssh/id_rsa" in c["command"]
    assert "AuthorizedKeysFile=/home/mpiuser/.ssh/authorized_keys" in c["command"]


def test_suspend_is_the_run_policys():
    _, mj = build(body(suspend=True))
    assert mj["spec"]["runPolicy"]["suspend"] is True and mpijob.suspended(mj)
    _, mj = build(body())
    assert not mpijob.suspended(mj)
    job = children.build_job(body(suspend=True), spec_mod.parse(body(suspend=True)), 1, WorkerConfig())
    assert mpijob.suspended(job)


def test_backoff_limit_is_the_worker_configs():
    _, mj = build(body(), cfg=WorkerConfig(mpi_job=MPI, backoff_limit=2))
    assert mj["spec"]["runPolicy"]["backoffLimit"] == 2


# ---------------------------------------------------------------------------------------------
# status: the MPIJob's conditions and its pods


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    return {"type": type_, "status": status, "reason": reason or f"MPIJob{type_}", "message": message}


def mpi(*conditions: dict, **status) -> dict:
    return {"kind": "MPIJob", "status": {"conditions": list(conditions), **status}}


def pod(role: str, index: int | None = None, state: dict | None = None, name: str = "") -> dict:
    labels = {mpijob.ROLE_LABEL: role}
    if index is not None:
        labels[mpijob.REPLICA_INDEX_LABEL] = str(index)
    container = "launcher" if role == "launcher" else "worker"
    return {
        "metadata": {"name": name or f"{role}-{index}", "labels": labels, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"containerStatuses": [{"name": container, "state": state or {"running": {}}}]},
    }


def terminated(message: str = "", exit_code: int = 0, reason: str = "Completed") -> dict:
    return {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}


def test_conditions_created_running_succeeded():
    workers = [pod("worker", 0), pod("worker", 1)]
    assert st.observe_mpijob(mpi(), []).state == "pending"
    assert st.observe_mpijob(mpi(cond("Created")), workers).state == "pending"
    assert st.observe_mpijob(mpi(cond("Created"), cond("Running")), workers).state == "running"
    assert st.observe_mpijob(mpi(cond("Created"), cond("Restarting")), workers).state == "running"
    launcher_active = mpi(cond("Created"), replicaStatuses={"Launcher": {"active": 1}})
    assert st.observe_mpijob(launcher_active, workers).state == "running"
    done = mpi(
        cond("Created"),
        cond("Running", "False"),
        cond("Succeeded"),
        startTime="2026-01-01T10:00:00Z",
        completionTime="2026-01-01T10:05:00Z",
    )
    launcher = pod("launcher", state=terminated(json.dumps(summary(1))))
    outcome = st.observe_mpijob(done, [launcher])
    assert outcome.state == "succeeded" and outcome.reason == "StageSucceeded"
    assert outcome.summary == summary(1) and outcome.duration_s == 300
    # an observe() of the MPIJob is observe_mpijob's
    assert st.observe(done, [launcher]) == outcome
    # worker pods' termination messages are not the stage's: only the launcher's counts
    stray = pod("worker", 0, terminated(json.dumps(summary(2))))
    assert st.observe_mpijob(done, [stray, launcher]).summary == summary(1)
    missing = st.observe_mpijob(done, [pod("launcher", state=terminated("bye"))])
    assert missing.state == "succeeded" and missing.reason == "NoSummary" and "launcher" in missing.message


def test_failed_condition_gives_the_mpi_operators_reason_and_the_launchers_log():
    failed = mpi(cond("Failed", reason="BackoffLimitExceeded/Error", message="Job has reached the backoff limit: "))
    launcher = pod("launcher", state=terminated("mpirun: rank 3 exited\nORTE has lost communication", 1, "Error"))
    outcome = st.observe_mpijob(failed, [launcher])
    assert outcome.state == "failed" and outcome.reason == "BackoffLimitExceeded"
    assert outcome.message.startswith("BackoffLimitExceeded/Error: Job has reached the backoff limit")
    assert "the launcher exited 1: mpirun: rank 3 exited | ORTE has lost communication" in outcome.message
    evicted = st.observe_mpijob(mpi(cond("Failed", reason="MPIJobEvicted", message="1/2 workers are evicted")), [])
    assert (evicted.reason, evicted.message) == ("MPIJobEvicted", "1/2 workers are evicted")
    bare = st.observe_mpijob(mpi({"type": "Failed", "status": "True"}), [])
    assert bare.reason == "MPIJobFailed"


def test_pods_say_why_first():
    error = json.dumps({"stage": 1, "error": "model file /mnt/pvc/models/tiny.pt not found"})
    failed = mpi(cond("Failed", reason="BackoffLimitExceeded/Error"))
    outcome = st.observe_mpijob(failed, [pod("worker", 0), pod("launcher", state=terminated(error, 1, "Error"))])
    assert (outcome.reason, outcome.message) == (
        "WorkerError",
        "the launcher: model file /mnt/pvc/models/tiny.pt not found",
    )
    oom = st.observe_mpijob(mpi(cond("Running")), [pod("launcher"), pod("worker", 1, terminated("", 137, "OOMKilled"))])
    assert oom.reason == "OOMKilled" and oom.message.startswith("worker 1 (pod worker-1) ran out of memory")
    pull = {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
    image = st.observe_mpijob(mpi(cond("Created")), [pod("worker", 0, pull)])
    assert image.reason == "ImagePullBackOff" and image.message.startswith("worker 0 (pod worker-0) cannot start")


def test_pod_index_and_names():
    assert st.pod_index(pod("worker", 3)) == 3 and st.pod_index(pod("launcher")) is None
    assert st.who(pod("launcher")) == "the launcher" and st.who(pod("worker", 2)) == "worker 2"
    # an Indexed Job's pods are as before
    indexed = {"metadata": {"labels": {children.INDEX_LABEL: "1"}}}
    assert st.pod_index(indexed) == 1 and st.who(indexed) == "worker 1"


# ---------------------------------------------------------------------------------------------
# when backend mpi cannot run here


def test_a_404_on_creating_an_mpijob_is_the_missing_crd():
    path = "/apis/kubeflow.org/v2beta1/namespaces/team-a/mpijobs"
    body404 = json.dumps({"kind": "Status", "reason": "NotFound", "code": 404})
    assert refusals.mpijob_crd_missing(ApiError(404, "POST", path, body404))
    assert not refusals.mpijob_crd_missing(ApiError(404, "GET", path + "/x", body404))  # a missing object
    assert not refusals.mpijob_crd_missing(ApiError(404, "POST", "/apis/batch/v1/namespaces/a/jobs", body404))
    assert not refusals.mpijob_crd_missing(ApiError(403, "POST", path, "{}"))
    message = mpijob.crd_missing_message(1, "team-a")
    assert "MPI operator v2" in message and "kubeflow/mpi-operator" in message and "team-a" in message
    assert message.startswith("stage 1: ")


def test_disabled_message_names_the_switch():
    message = mpijob.disabled_message()
    assert "mpiJob.enabled: true" in message and "workers.mpiJob.enabled=true" in message


@pytest.mark.parametrize("backend", ["torch", "horovod"])
def test_other_backends_keep_the_indexed_job(backend):
    b = body(backend=backend)
    kinds = [c["kind"] for c in children.build_children(b, spec_mod.parse(b), 1, WorkerConfig(mpi_job=MPI))]
    assert kinds == ["Service", "ConfigMap", "Job"]


def test_mpijob_carries_deadline_kueue_and_attempt():
    b = body(workers=2, activeDeadlineSeconds=600, managedBy="kueue.x-k8s.io")
    b["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a"}
    b["metadata"]["annotations"] = {"kueue.x-k8s.io/priority-class": "high"}
    cm, mj = mpijob.build_children(b, spec_mod.parse(b), 1, WorkerConfig(mpi_job=MPI), attempt=3)
    assert mj["metadata"]["name"] == "job-s1-r3" and cm["metadata"]["name"] == "job-s1"
    assert mj["spec"]["runPolicy"]["suspend"] is True and mj["spec"]["runPolicy"]["activeDeadlineSeconds"] == 600
    metas = [mj["metadata"]] + [r["template"]["metadata"] for r in mj["spec"]["mpiReplicaSpecs"].values()]
    for meta in metas:
        assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert meta["labels"][children.LABEL_ATTEMPT] == "3"
        assert meta["annotations"]["kueue.x-k8s.io/priority-class"] == "high"
    _, pod, _ = replica(mj, "Launcher")
    assert pod["volumes"][0]["configMap"]["name"] == "job-s1"  # the stage's ConfigMap, whichever MPIJob


def test_launcher_and_workers_carry_the_worker_configs_pod_settings():
    b = body(
        workers=2,
        model={"factory": "mynets.small:build", "codeUri": "pvc://code/src"},
        data={"uri": "pvc://datasets/train.npz"},
        output={"uri": "pvc://results/run-1"},
    )
    cfg = WorkerConfig(
        mpi_job=MPI,
        image_pull_secrets=["regcred"],
        pod_annotations={"sidecar.istio.io/inject": "false"},
        pod_labels={"team": "ml"},
        priority_class_name="batch-low",
        scheduler_name="volcano",
        env=[{"name": "NCCL_DEBUG", "value": "INFO"}],
        shm_size_limit="1Gi",
        pod_security_context={"fsGroup": 5000},
    )
    _, mj = build(b, 1, cfg)
    for kind, role in (("Launcher", "launcher"), ("Worker", "worker")):
        r, pod, c = replica(mj, kind)
        meta = r["template"]["metadata"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}], kind
        assert (pod["priorityClassName"], pod["schedulerName"]) == ("batch-low", "volcano"), kind
        assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
        assert meta["labels"]["team"] == "ml" and meta["labels"][mpijob.ROLE_LABEL] == role
        assert meta["labels"]["kondense.dev/job"] == "job"
        assert c["env"][-1] == {"name": "NCCL_DEBUG", "value": "INFO"}
        assert env_of(c).get("KONDENSE_BACKEND", "mpi") == "mpi"
        # sshd's user: the worker config may change the groups, never the UID, with mpi on
        assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["fsGroup"] == 5000
        assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    _, pod, c = replica(mj, "Worker")
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}} in pod["volumes"]
    # the ranks run on the workers: the inputs read-only, the output alone writable
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {
        volumes[m["name"]]["persistentVolumeClaim"]["claimName"]: (
            m.get("readOnly", False),
            volumes[m["name"]]["persistentVolumeClaim"].get("readOnly", False),
        )
        for m in c["volumeMounts"]
        if "persistentVolumeClaim" in volumes[m["name"]]
    }
    assert claims == {"code": (True, True), "datasets": (True, True), "results": (False, False)}
    _, launcher_pod, _ = replica(mj, "Launcher")
    assert not [v for v in launcher_pod["volumes"] if "persistentVolumeClaim" in v]


def test_an_mpi_launcher_whose_resources_would_be_refused_is_named():
    b = body()
    cfg = WorkerConfig(mpi_job={**MPI, "launcherResources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}})
    message = resources.invalid(spec_mod.parse(b), cfg)
    assert message == (
        "MPI launcher pod: the worker config's mpiJob.launcherResources.requests.cpu (2) is above the limit "
        "(1, from the worker config's mpiJob.launcherResources.limits.cpu)"
    )
    # the same resources are not checked for a backend that has no launcher
    assert resources.invalid(spec_mod.parse(body(backend="torch")), cfg) is None
