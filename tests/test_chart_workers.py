"""The chart's `workers` pod settings (issue #13): rendered into the worker config, loaded by the
operator as it loads its file, and carried onto the pods of the Job (and MPIJob) it builds: pull
secrets, annotations, labels, priority class, scheduler, env, /dev/shm's sizeLimit and the IDs,
with them and without (OpenShift). Needs helm, no cluster."""

from __future__ import annotations

import pytest
import yaml

from kondense.job import spec as spec_mod
from kondense_operator import children, mpijob
from kondense_operator.config import worker_config_from_dict

from .chart_util import by_kind, render, set_args, template, validate_k8s

ADMIN = {
    "workers": {
        "imagePullSecrets": ["regcred"],
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
        "podLabels": {"team": "ml"},
        "priorityClassName": "batch-low",
        "schedulerName": "volcano",
        "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
        "shmSizeLimit": "2Gi",
    },
    "watch": {"scope": "namespace"},
}
OPENSHIFT = [
    "workers.podSecurityContext.runAsUser=null",
    "workers.podSecurityContext.runAsGroup=null",
    "workers.podSecurityContext.fsGroup=null",
]


def manifest(**spec) -> dict:
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "job", "namespace": "ml", "uid": "uid-1"},
        "spec": {
            "model": {"factory": "mynets.small:build", "codeUri": "pvc://code/src"},
            "data": {"uri": "pvc://datasets/train.npz"},
            "output": {"uri": "pvc://results/run-1"},
            "delta": 2.0,
            "workers": 2,
            **spec,
        },
    }


def loaded(objects: list[dict]):
    """The worker config the chart renders, as the operator loads it."""
    (cm,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-worker-config")]
    return worker_config_from_dict(yaml.safe_load(cm["data"]["worker.yaml"]), "the chart's worker config")


def job_pod(objects: list[dict], **spec) -> dict:
    b = manifest(**spec)
    job = children.build_job(b, spec_mod.parse(b), 1, loaded(objects))
    validate_k8s(job)  # what the API server's schema accepts, strictly (no unknown fields)
    return job["spec"]["template"]


def test_workers_pod_settings_reach_the_job_pods_and_the_service_account(tmp_path):
    objects = render(*set_args(ADMIN, tmp_path=tmp_path))
    template = job_pod(objects)
    pod, meta = template["spec"], template["metadata"]
    (c,) = pod["containers"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert (pod["priorityClassName"], pod["schedulerName"]) == ("batch-low", "volcano")
    assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
    assert meta["labels"]["team"] == "ml" and meta["labels"]["kondense.dev/job"] == "job"
    assert c["env"][-1] == {"name": "NCCL_DEBUG", "value": "INFO"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # the inputs read-only, the output alone writable
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {
        volumes[m["name"]]["persistentVolumeClaim"]["claimName"]: not m.get("readOnly", False)
        for m in c["volumeMounts"]
        if "persistentVolumeClaim" in volumes[m["name"]]
    }
    assert writable == {"code": False, "datasets": False, "results": True}
    (sa,) = [o for o in by_kind(objects, "ServiceAccount") if o["metadata"]["name"] == "kondense-worker"]
    assert sa["imagePullSecrets"] == [{"name": "regcred"}]
    validate_k8s(sa)


def test_default_values_change_nothing_on_the_pods():
    objects = render("--set", "watch.scope=namespace")
    pod = job_pod(objects)["spec"]
    for key in ("imagePullSecrets", "priorityClassName", "schedulerName"):
        assert key not in pod
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["fsGroup"]) == (1000, 1000)
    (sa,) = [o for o in by_kind(objects, "ServiceAccount") if o["metadata"]["name"] == "kondense-worker"]
    assert "imagePullSecrets" not in sa


def test_ids_set_to_null_are_left_out_for_openshift():
    """Helm deletes a key set to null; the chart renders it as null, which the operator reads as
    "leave it out", not as its default 1000."""
    args = [a for s in OPENSHIFT for a in ("--set", s)]
    pod = job_pod(render(*args))["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # one ID alone may go too
    pod = job_pod(render("--set", "workers.podSecurityContext.fsGroup=null"))["spec"]
    assert "fsGroup" not in pod["securityContext"] and pod["securityContext"]["runAsUser"] == 1000


def test_mpijob_pods_get_the_same_settings(tmp_path):
    values = {**ADMIN, "workers": {**ADMIN["workers"], "mpiJob": {"enabled": True}}}
    cfg = loaded(render(*set_args(values, tmp_path=tmp_path)))
    b = manifest(backend="mpi", workers=2)
    mj = mpijob.build_mpijob(b, spec_mod.parse(b), 1, cfg)
    for kind in (mpijob.LAUNCHER, mpijob.WORKER):
        template = mj["spec"]["mpiReplicaSpecs"][kind]["template"]
        pod = template["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}], kind
        assert (pod["priorityClassName"], pod["schedulerName"]) == ("batch-low", "volcano"), kind
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        assert template["metadata"]["labels"]["team"] == "ml"
        assert pod["containers"][0]["env"][-1] == {"name": "NCCL_DEBUG", "value": "INFO"}
        assert pod["securityContext"]["runAsUser"] == 1000


@pytest.mark.parametrize(
    "bad,field",
    [
        (["workers.imagePullSecrets[0].name=regcred"], "/workers/imagePullSecrets/0"),
        (
            ["workers.podLabels.kondense\\.dev/job=x"],
            "invalid propertyName 'kondense.dev/job'",
        ),  # helm names the key, not its path
        (["workers.env[0].name=KONDENSE_WORKERS", "workers.env[0].value=8"], "/workers/env/0/name"),
        (["workers.env[0].name=X"], "/workers/env/0"),
        (["workers.podSecurityContext.runAsUser=0"], "/workers/podSecurityContext/runAsUser"),
        (["workers.shmSizeLimit=lots"], "/workers/shmSizeLimit"),
        (["workers.schedulerName=My Scheduler"], "/workers/schedulerName"),
    ],
)
def test_bad_worker_pod_values_fail_install(bad, field):
    args = [a for s in bad for a in ("--set", s)]
    result = template(*args, check=False)
    assert result.returncode != 0, f"helm accepted {bad}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


def test_mpi_with_the_uid_left_out_fails_the_operator_at_start():
    """sshd needs UID 1000: the chart renders the config, and the operator refuses it when it loads."""
    objects = render("--set", "workers.mpiJob.enabled=true", "--set", OPENSHIFT[0])
    with pytest.raises(ValueError, match=r"podSecurityContext.runAsUser must be 1000 while mpiJob.enabled is true"):
        loaded(objects)
