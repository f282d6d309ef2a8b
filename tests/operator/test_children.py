"""The pure builders and status rules, and the operator's command line: no API server."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from kondense.job import spec as spec_mod
from kondense_operator import children, resources
from kondense_operator import status as st
from kondense_operator.cli import parse_config
from kondense_operator.config import ConfigError, WorkerConfig, worker_config_from_dict

from .conftest import cj_manifest

DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def body(name: str = "job", **spec) -> dict:
    b = cj_manifest(name, "ns", **spec)
    b["metadata"]["uid"] = "uid-1"
    return b


def test_operator_never_imports_torch():
    code = "import kondense_operator.handlers, kondense_operator.cli, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["job", "resnet.fmnist", "1abc", "a" * 253, "a.b", "a-b", "x" * 60 + ".y"])
def test_child_names_are_dns1035_labels(name):
    for stage in (1, 2):
        n = children.child_name(name, stage)
        assert DNS1035.fullmatch(n) and len(n) <= 50, n
        assert len(f"{n}-999") <= 63  # pod host names
    assert len(children.label_value(name)) <= 63
    assert children.child_name("a.b", 1) != children.child_name("a-b", 1)


def test_job_pod_spec():
    b = body(device="cuda", slotsPerWorker=4, resources={"limits": {"memory": "8Gi"}})
    job = spec_mod.parse(b)
    cfg = WorkerConfig(
        image="img:1",
        gpu_node_selector={"gpu": "yes"},
        gpu_tolerations=[{"key": "gpu"}],
        node_selector={"pool": "ml"},
        resources={"requests": {"cpu": "2"}},
    )
    svc, cm, k8s_job = children.build_children(b, job, 2, cfg)
    for child in (svc, cm, k8s_job):
        assert child["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "kondense.dev/v1alpha1",
                "kind": "CompressionJob",
                "name": "job",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "kondense" and labels["app.kubernetes.io/component"] == "worker"
        assert labels["kondense.dev/job"] == "job" and labels["kondense.dev/stage"] == "2"
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["selector"] == children.selector("job", 2)
    assert spec_mod.parse(yaml.safe_load(cm["data"]["job.yaml"])) == job
    s = k8s_job["spec"]
    assert (s["completionMode"], s["completions"], s["parallelism"], s["backoffLimit"]) == ("Indexed", 2, 2, 0)
    pod = s["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"] and pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["nodeSelector"] == {"pool": "ml", "gpu": "yes"} and pod["tolerations"] == [{"key": "gpu"}]
    (c,) = pod["containers"]
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
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["resources"] == {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": 4}}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["KONDENSE_COORDINATOR"] == f"{k8s_job['metadata']['name']}-0.{svc['metadata']['name']}"
    assert (env["KONDENSE_WORKERS"], env["KONDENSE_SLOTS"], env["KONDENSE_BACKEND"], env["KONDENSE_PORT"]) == (
        "2",
        "4",
        "torch",
        "29500",
    )
    assert env["KONDENSE_HOME"] == "/var/cache/kondense"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/mnt/pvc/models"]]["persistentVolumeClaim"] == {"claimName": "models"}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory"}
    assert "emptyDir" in volumes[mounts["/tmp"]] and "emptyDir" in volumes[mounts["/var/cache/kondense"]]


def test_zoo_cache_claim_service_account_and_cpu():
    b = body(device="cpu")
    cfg = WorkerConfig(zoo_cache_claim="zoo", service_account_name="kondense-worker")
    pod = children.build_job(b, spec_mod.parse(b), 1, cfg)["spec"]["template"]["spec"]
    assert {"name": "home", "persistentVolumeClaim": {"claimName": "zoo"}} in pod["volumes"]
    assert pod["serviceAccountName"] == "kondense-worker" and pod["automountServiceAccountToken"] is False
    assert "resources" not in pod["containers"][0] and "nodeSelector" not in pod


def test_failure_priority():
    job = {
        "spec": {"completions": 2},
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit"}]
        },
    }

    def pod(i, state):
        return {
            "metadata": {"name": f"p{i}", "labels": {children.INDEX_LABEL: str(i)}},
            "status": {"containerStatuses": [{"name": "worker", "state": state}]},
        }

    assert st.observe_stage(job, []).reason == "BackoffLimitExceeded"
    oom = pod(1, {"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    assert st.observe_stage(job, [oom]).reason == "OOMKilled"
    err = pod(0, {"terminated": {"exitCode": 1, "message": '{"stage": 1, "error": "boom"}'}})
    assert st.observe_stage(job, [oom, err]).reason == "WorkerError"
    logs = pod(0, {"terminated": {"exitCode": 1, "message": "Traceback\nValueError: x"}})
    out = st.observe_stage(job, [logs])
    assert out.reason == "BackoffLimitExceeded" and "ValueError: x" in out.message
    running = {"spec": {"completions": 2}, "status": {"active": 2}}
    assert st.observe_stage(running, []).state == "running"
    assert st.observe_stage({"spec": {"completions": 2}}, []).state == "pending"
    pull = pod(0, {"waiting": {"reason": "ErrImagePull"}})
    assert st.observe_stage(running, [pull]).reason == "ImagePullBackOff"


def test_conditions_move_only_on_flips():
    conds = st.set_condition([], "Running", True, "A", "a", 1)
    t = conds[0]["lastTransitionTime"]
    conds[0]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    conds = st.set_condition(conds, "Running", True, "B", "b", 2)
    assert conds[0]["lastTransitionTime"] == "2000-01-01T00:00:00Z" and conds[0]["reason"] == "B"
    conds = st.set_condition(conds, "Running", False, "C", "c", 2)
    assert conds[0]["lastTransitionTime"] != "2000-01-01T00:00:00Z" and t


def test_cli_contract(tmp_path, monkeypatch):
    monkeypatch.delenv("KONDENSE_WATCH_NAMESPACES", raising=False)
    cfg, _ = parse_config([])
    assert cfg.clusterwide and cfg.metrics_port == 9090 and cfg.health_port == 8080
    assert cfg.worker.image == "ghcr.io/kondense/kondense-worker:0.1.0"
    cfg, _ = parse_config(["--namespace", "a", "--namespace", "b", "--metrics-port", "0"])
    assert cfg.namespaces == ("a", "b") and cfg.metrics_port == 0
    monkeypatch.setenv("KONDENSE_WATCH_NAMESPACES", "x, y")
    assert parse_config([])[0].namespaces == ("x", "y")
    assert parse_config(["--all-namespaces"])[0].clusterwide
    with pytest.raises(SystemExit):
        parse_config(["--all-namespaces", "--namespace", "a"])
    path = tmp_path / "worker.yaml"
    path.write_text(
        "image: reg/kondense:1\nimagePullPolicy: Always\nzooCacheClaim: zoo\nport: 23456\n"
        "nodeSelector: {a: b}\ntolerations: []\ngpuNodeSelector: {}\ngpuTolerations: []\nresources: {}\n"
        "serviceAccountName: ''\n"
    )
    cfg, _ = parse_config(["--worker-config", str(path)])
    assert (cfg.worker.image, cfg.worker.image_pull_policy, cfg.worker.port) == ("reg/kondense:1", "Always", 23456)
    assert parse_config(["--worker-config", str(path), "--worker-image", "other:2"])[0].worker.image == "other:2"
    monkeypatch.setenv("KONDENSE_WORKER_IMAGE", "env:3")
    assert parse_config([])[0].worker.image == "env:3"
    path.write_text("imagee: x\n")
    with pytest.raises(SystemExit):
        parse_config(["--worker-config", str(path)])
    with pytest.raises(ConfigError, match="imagePullPolicy"):
        worker_config_from_dict({"imagePullPolicy": "Sometimes"})


def test_a_factory_s_code_and_the_inputs_are_mounted_read_only_and_the_output_writable():
    b = body(
        model={"factory": "mynets.small:build", "codeUri": "pvc://code/src", "uri": "pvc://weights/w.pt"},
        data={"uri": "pvc://datasets/train.npz"},
        output={"uri": "pvc://results/run-1"},
    )
    job = spec_mod.parse(b)
    pod = children.build_job(b, job, 1, WorkerConfig())["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {}
    for m in c["volumeMounts"]:
        claim = volumes[m["name"]].get("persistentVolumeClaim")
        if claim:
            claims[claim["claimName"]] = (m.get("readOnly", False), claim.get("readOnly", False), m["mountPath"])
    assert claims == {
        "code": (True, True, "/mnt/pvc/code"),
        "weights": (True, True, "/mnt/pvc/weights"),
        "datasets": (True, True, "/mnt/pvc/datasets"),
        "results": (False, False, "/mnt/pvc/results"),
    }
    # the worker receives the factory and where its code is; the operator itself never imported it
    manifest = yaml.safe_load(children.build_children(b, job, 1, WorkerConfig())[1]["data"]["job.yaml"])
    assert manifest["spec"]["model"]["factory"] == "mynets.small:build"
    assert "mynets" not in sys.modules


@pytest.mark.parametrize("name", ["job", "a" * 253, "x" * 60 + ".y"])
def test_restarted_jobs_are_named_by_the_restart_count(name):
    assert children.job_name(name, 1, 0) == children.child_name(name, 1)
    names = {children.job_name(name, stage, k) for stage in (1, 2) for k in range(0, 101)}
    assert len(names) == 202  # one Job per (stage, status.restarts)
    for n in names:
        # the Indexed Job's pod host names: <job>-<index>, index < 256 (spec.workers' maximum)
        assert DNS1035.fullmatch(n) and len(f"{n}-255") <= 63, n


def test_a_restarted_stage_shares_its_service_and_configmap():
    b = body()
    svc, cm, k8s_job = children.build_children(b, spec_mod.parse(b), 2, WorkerConfig(), attempt=2)
    assert (svc["metadata"]["name"], cm["metadata"]["name"], k8s_job["metadata"]["name"]) == ("job-s2",) * 2 + (
        "job-s2-r2",
    )
    tpl = k8s_job["spec"]["template"]
    assert tpl["spec"]["subdomain"] == "job-s2" and tpl["spec"]["volumes"][0]["configMap"]["name"] == "job-s2"
    (container,) = tpl["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KONDENSE_COORDINATOR"] == "job-s2-r2-0.job-s2"  # host name <job>-0 in the Service's subdomain
    for labels in (k8s_job["metadata"]["labels"], tpl["metadata"]["labels"]):
        assert labels[children.LABEL_ATTEMPT] == "2" and labels[children.LABEL_STAGE] == "2"
    assert children.LABEL_ATTEMPT not in svc["spec"]["selector"]  # the Service is the stage's, whichever Job

    def pod(name: str, attempt: str | None) -> dict:
        labels = {} if attempt is None else {children.LABEL_ATTEMPT: attempt}
        return {"metadata": {"name": name, "labels": labels}}

    pods = [pod("old", None), pod("first", "0"), pod("lost", "1"), pod("now", "2")]
    assert [p["metadata"]["name"] for p in children.of_attempt(pods, 0)] == ["old", "first"]
    assert [p["metadata"]["name"] for p in children.of_attempt(pods, 2)] == ["now"]


def test_a_lost_pod_fails_the_job_at_once_whatever_backoff_limit():
    b = body()
    k8s_job = children.build_job(b, spec_mod.parse(b), 1, WorkerConfig(backoff_limit=4))
    assert k8s_job["spec"]["backoffLimit"] == 4
    assert k8s_job["spec"]["podFailurePolicy"] == {
        "rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    }
    assert k8s_job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it


def test_deadline_and_kueue_go_onto_the_job_and_its_pods():
    b = body(activeDeadlineSeconds=3600, managedBy="kueue.x-k8s.io")
    b["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a", "team": "a"}
    b["metadata"]["annotations"] = {"kueue.x-k8s.io/priority-class": "high", "note": "x"}
    svc, cm, k8s_job = children.build_children(b, spec_mod.parse(b), 1, WorkerConfig())
    spec = k8s_job["spec"]
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["suspend"] is True  # Kueue unsuspends it on admission
    assert "managedBy" not in spec  # the Job controller runs it; Kueue only admits it
    for meta in (k8s_job["metadata"], spec["template"]["metadata"]):
        assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a" and "team" not in meta["labels"]
        assert meta["annotations"]["kueue.x-k8s.io/priority-class"] == "high" and "note" not in meta["annotations"]
    for child in (svc, cm):
        assert "kueue.x-k8s.io/queue-name" not in child["metadata"]["labels"]

    plain = body(suspend=False)
    plain["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a"}
    spec = children.build_job(plain, spec_mod.parse(plain), 1, WorkerConfig())["spec"]
    assert spec["suspend"] is False and "activeDeadlineSeconds" not in spec
    assert spec["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


ADMIN = dict(
    image_pull_secrets=["regcred"],
    pod_annotations={"sidecar.istio.io/inject": "false", "kondense.dev/compressionjob": "not-this"},
    pod_labels={"team": "ml"},
    priority_class_name="batch-low",
    scheduler_name="volcano",
    env=[{"name": "NCCL_DEBUG", "value": "INFO"}],
    shm_size_limit="2Gi",
)


def test_the_worker_configs_pod_settings_reach_the_job_pods():
    b = body()
    job = children.build_job(b, spec_mod.parse(b), 1, worker_config_from_dict({"podSecurityContext": {"fsGroup": 7}}))
    plain = job["spec"]["template"]
    cfg = WorkerConfig(**ADMIN, pod_security_context={"fsGroup": 7})
    template = children.build_job(b, spec_mod.parse(b), 1, cfg)["spec"]["template"]
    pod, meta = template["spec"], template["metadata"]
    (c,) = pod["containers"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert (pod["priorityClassName"], pod["schedulerName"]) == ("batch-low", "volcano")
    # the admin's labels and annotations join the operator's, which win where both name a key
    assert meta["labels"] == {**plain["metadata"]["labels"], "team": "ml"}
    assert meta["annotations"] == {**plain["metadata"]["annotations"], "sidecar.istio.io/inject": "false"}
    assert meta["annotations"]["kondense.dev/compressionjob"] == "job"
    # the admin's env comes after the worker contract, which it leaves as it was
    (plain_c,) = plain["spec"]["containers"]
    assert c["env"] == plain_c["env"] + [{"name": "NCCL_DEBUG", "value": "INFO"}]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 7,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"] == plain["spec"]["securityContext"]


def test_default_worker_config_adds_nothing_new_to_the_pods():
    b = body()
    template = children.build_job(b, spec_mod.parse(b), 1, WorkerConfig())["spec"]["template"]
    pod = template["spec"]
    for key in ("imagePullSecrets", "priorityClassName", "schedulerName"):
        assert key not in pod, key
    assert set(template["metadata"]["labels"]) == set(children.labels("job", 1)) | {children.LABEL_ATTEMPT}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert not [e for e in pod["containers"][0]["env"] if e["name"] == "NCCL_DEBUG"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["fsGroup"]) == (1000, 1000)


def test_ids_left_out_for_openshift_leave_the_pods_non_root():
    """OpenShift's restricted SCC assigns the UID and groups: the pods name none, and still refuse root."""
    cfg = worker_config_from_dict({"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}})
    b = body()
    pod = children.build_job(b, spec_mod.parse(b), 1, cfg)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True
    assert "runAsUser" not in pod["containers"][0]["securityContext"]


@pytest.mark.parametrize(
    "spec,admin,expected",
    [
        (
            {"resources": {"requests": {"memory": "8Gi"}}},
            {"limits": {"memory": "4Gi"}},
            "worker pods: spec.resources.requests.memory (8Gi) is above the limit "
            "(4Gi, from the worker config's resources.limits.memory)",
        ),
        (
            {"resources": {"limits": {"cpu": "500m"}}},
            {"requests": {"cpu": 1}},
            "worker pods: the worker config's resources.requests.cpu (1) is above the limit "
            "(500m, from spec.resources.limits.cpu)",
        ),
        (
            {"device": "cuda", "slotsPerWorker": 2, "resources": {"requests": {"nvidia.com/gpu": 1}}},
            {},
            "worker pods: spec.resources.requests.nvidia.com/gpu (1) differs from the limit "
            "(2, from spec.slotsPerWorker, one GPU per slot for device cuda): nvidia.com/gpu cannot be "
            "overcommitted, so its request must equal its limit",
        ),
        (
            {"resources": {"requests": {"example.com/fpga": 1}}},
            {},
            "worker pods: spec.resources.requests.example.com/fpga (1) has no limit",
        ),
        (
            {"resources": {"requests": {"hugepages-2Mi": "1Gi"}, "limits": {"hugepages-2Mi": "2Gi"}}},
            {},
            "worker pods: spec.resources.requests.hugepages-2Mi (1Gi) differs from the limit",
        ),
    ],
)
def test_resources_the_api_server_would_refuse_are_named(spec, admin, expected):
    job = spec_mod.parse(body(**spec))
    message = resources.invalid(job, WorkerConfig(resources=admin))
    assert message is not None and message.startswith(expected), message


@pytest.mark.parametrize(
    "spec,admin",
    [
        # quantities compare as numbers, not as text: 1000m is 1, 1Gi is below 2G, 1024Mi is 1Gi
        ({"resources": {"requests": {"cpu": "1000m"}}}, {"limits": {"cpu": 1}}),
        ({"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "2G"}}}, {}),
        ({"resources": {"requests": {"memory": "2Gi", "ephemeral-storage": "1Gi"}}}, {}),  # overcommit allowed
        ({"device": "cuda", "slotsPerWorker": 2, "resources": {"requests": {"nvidia.com/gpu": 2}}}, {}),
        ({"resources": {"requests": {"memory": "1Gi"}}}, {"limits": {"memory": "1024Mi"}}),
    ],
)
def test_resources_the_api_server_accepts_pass(spec, admin):
    job = spec_mod.parse(body(**spec))
    assert resources.invalid(job, WorkerConfig(resources=admin)) is None


def test_the_checked_resources_are_the_containers():
    b = body(device="cuda", slotsPerWorker=2, resources={"requests": {"memory": "1Gi"}})
    cfg = WorkerConfig(resources={"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}})
    job = spec_mod.parse(b)
    (c,) = children.build_job(b, job, 1, cfg)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == resources.merge(job, cfg).as_resources()
    assert c["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "4Gi", "nvidia.com/gpu": 2},
    }
