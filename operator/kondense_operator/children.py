"""Pure builders of a stage's children: a headless Service, a ConfigMap with the job manifest,
and an Indexed Job of `kondense worker` pods. No API calls here (like kubeflow/mpi-operator keeps
its builders apart from its controller), so the reconcile loop and the tests share one truth.

Names are deterministic (derived from the CompressionJob's name and the stage): that is how a
restarted operator finds what it created before, and why creating twice is harmless.
"""

from __future__ import annotations

import copy
import hashlib
import re

import yaml

from kondense.job import spec as spec_mod
from kondense.job import uris
from kondense.job.worker_env import WorkerEnv

from . import kueue, resources
from .config import WorkerConfig

JOB_FILE = "/etc/kondense/job.yaml"
CONFIG_DIR = "/etc/kondense"
PVC_ROOT = "/mnt/pvc"
KONDENSE_HOME = "/var/cache/kondense"
CONTAINER = "worker"
GPU_RESOURCE = resources.GPU_RESOURCE
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = "kondense.dev/job"
LABEL_STAGE = "kondense.dev/stage"
# which Job of its stage a pod belongs to: 0 for the first, then status.restarts when it was re-created
LABEL_ATTEMPT = "kondense.dev/attempt"

# the children's names get "-s1"/"-s2", a re-created stage's Job "-r<restarts>" (at most "-r100"), and
# pods' host names "-<index>" on top, within 63 characters
_BASE_MAX = 45
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _hash(name: str, n: int = 6) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:n]


def base_name(name: str) -> str:
    """A DNS-1035 label for the children of CompressionJob `name` (a DNS-1123 subdomain: it may
    hold dots, start with a digit, be 253 long). Changed names carry a hash of the original so
    that 'a.b' and 'a-b' never share children."""
    if len(name) <= _BASE_MAX and _DNS1035.fullmatch(name):
        return name
    s = name.replace(".", "-")
    if not s[0].isalpha():
        s = "cj-" + s
    s = s[: _BASE_MAX - 7].rstrip("-")
    return f"{s}-{_hash(name)}"


def child_name(name: str, stage: int) -> str:
    """The Service, ConfigMap and Job of one stage share this name (one of each kind)."""
    return f"{base_name(name)}-s{stage}"


def job_name(name: str, stage: int, attempt: int = 0) -> str:
    """The stage's Job (MPIJob): child_name for the first, "-r<k>" after it where the stage was
    re-created with status.restarts k (restarts.py). Deterministic from the status, so a restarted
    operator finds the Job it made and never makes a second one for the same loss; the Service and
    the ConfigMap are the stage's, shared by its Jobs."""
    return child_name(name, stage) if attempt == 0 else f"{child_name(name, stage)}-r{attempt}"


def of_attempt(pods: list[dict], attempt: int) -> list[dict]:
    """The pods of the stage's current Job: those of an earlier (failed) Job keep its label. Pods
    without the label are a first Job's, made before the label existed."""
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_ATTEMPT, "0") == str(attempt)]


def label_value(name: str) -> str:
    """The CompressionJob's name as a label value (at most 63 characters)."""
    return name if len(name) <= 63 else f"{name[:56].rstrip('.-')}-{_hash(name)}"


def selector(name: str, stage: int) -> dict[str, str]:
    return {LABEL_JOB: label_value(name), LABEL_STAGE: str(stage)}


def labels(name: str, stage: int) -> dict[str, str]:
    return {
        LABEL_NAME: "kondense",
        LABEL_COMPONENT: "worker",
        LABEL_MANAGED_BY: "kondense-operator",
        **selector(name, stage),
    }


def owner_reference(body: dict) -> dict:
    """Makes the CompressionJob the controller of a child: deleting it deletes the child."""
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", spec_mod.API_VERSION),
        "kind": body.get("kind", spec_mod.KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(body: dict, stage: int) -> dict:
    meta = body["metadata"]
    return {
        "name": child_name(meta["name"], stage),
        "namespace": meta["namespace"],
        "labels": labels(meta["name"], stage),
        "annotations": {"kondense.dev/compressionjob": meta["name"]},
        "ownerReferences": [owner_reference(body)],
    }


def coordinator(name: str, stage: int, attempt: int = 0) -> str:
    """Worker 0's stable DNS name: host name <job>-0 in the headless Service's subdomain."""
    return f"{job_name(name, stage, attempt)}-0.{child_name(name, stage)}"


def run_metadata(body: dict, stage: int, attempt: int) -> dict:
    """A stage Job's (MPIJob's) metadata: the stage's, its own name and attempt label, and the
    CompressionJob's kueue.x-k8s.io/* labels and annotations (queue-name, priority-class, ...)."""
    meta = child_metadata(body, stage)
    labels, annotations = kueue.propagated(body)
    meta["name"] = job_name(body["metadata"]["name"], stage, attempt)
    meta["labels"].update({**labels, LABEL_ATTEMPT: str(attempt)})
    meta["annotations"].update(annotations)
    return meta


def pod_failure_policy() -> dict:
    """A pod the infrastructure took (condition DisruptionTarget: eviction, preemption, a lost
    node) fails the Job at once, whatever backoffLimit says: a distributed stage's ranks cannot
    rejoin one at a time, so the operator re-creates the whole stage from its checkpoint (counted
    against spec.maxRestarts), and the Job's Failed condition keeps the record of the loss once the
    pod is gone. Other failures count against the Job's backoffLimit (the worker config's)."""
    return {"rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}


def build_service(body: dict, stage: int, cfg: WorkerConfig) -> dict:
    """Headless, publishing not-ready pods too: the ranks must find each other while starting."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(body, stage),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(body["metadata"]["name"], stage),
            "ports": [{"name": "rendezvous", "port": cfg.port, "targetPort": cfg.port, "protocol": "TCP"}],
        },
    }


def build_configmap(body: dict, job: spec_mod.CompressionJob, stage: int) -> dict:
    """The manifest the pods read, defaults filled in, exactly as kondense.job.spec parses it back."""
    text = yaml.safe_dump(spec_mod.to_manifest(job), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(body, stage),
        "data": {"job.yaml": text},
    }


def worker_resources(job: spec_mod.CompressionJob, cfg: WorkerConfig) -> dict:
    """The admin's defaults, the job's own requests/limits over them, and one GPU per slot for cuda
    (resources.merge, which reconcile checks before any child is made)."""
    return resources.merge(job, cfg).as_resources()


def env_list(contract: dict[str, str], cfg: WorkerConfig | None = None) -> list[dict]:
    """A container's env: the worker contract (kondense.job.worker_env), what every pod sets, then
    the worker config's env (whose schema refuses the names set here)."""
    extra = [{"name": e["name"], "value": e["value"]} for e in (cfg.env if cfg else [])]
    return [
        {"name": k, "value": v}
        for k, v in {
            **contract,
            "KONDENSE_HOME": KONDENSE_HOME,
            "HOME": "/tmp",  # the root file system is read-only
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "KONDENSE_PROGRESS_LINES": "1",  # rank 0's progress lines, which the operator reads from the log
        }.items()
    ] + extra


def worker_volumes(job: spec_mod.CompressionJob, stage: int, cfg: WorkerConfig) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts) of a pod that runs ranks: the job's ConfigMap, /tmp, /dev/shm, KONDENSE_HOME
    (the zoo cache claim, if any), and every claim of the job's URIs under PVC_ROOT."""
    s = job.spec
    mounts = [
        {"name": "job", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "home", "mountPath": KONDENSE_HOME},
    ]
    volumes: list[dict] = [
        job_volume(job.name, stage),
        {"name": "tmp", "emptyDir": {}},
        shm_volume(cfg),
        {"name": "home", "persistentVolumeClaim": {"claimName": cfg.zoo_cache_claim}}
        if cfg.zoo_cache_claim
        else {"name": "home", "emptyDir": {}},
    ]
    output_claim = uris.claim(s.output_uri)
    for i, claim in enumerate(spec_mod.claims(s)):
        # only the output is written: the model, its code and the data are the user's, never changed
        read_only = claim != output_claim
        volumes.append(
            {
                "name": f"pvc-{i}",
                "persistentVolumeClaim": {"claimName": claim, **({"readOnly": True} if read_only else {})},
            }
        )
        mounts.append(
            {"name": f"pvc-{i}", "mountPath": f"{PVC_ROOT}/{claim}", **({"readOnly": True} if read_only else {})}
        )
    return volumes, mounts


def shm_volume(cfg: WorkerConfig) -> dict:
    """/dev/shm, which gloo, NCCL and data loaders use: memory-backed, so its pages count against the
    container's memory limit; the worker config's shmSizeLimit caps it (else the node's memory)."""
    empty_dir: dict = {"medium": "Memory"}
    if cfg.shm_size_limit:
        empty_dir["sizeLimit"] = cfg.shm_size_limit
    return {"name": "dshm", "emptyDir": empty_dir}


def pod_metadata(meta: dict, cfg: WorkerConfig, **own_labels: str) -> dict:
    """A pod template's metadata: the worker config's podLabels and podAnnotations, under the stage
    Job's own labels and annotations (which select and describe its pods, so they win)."""
    return {
        "labels": {**cfg.pod_labels, **meta["labels"], **own_labels},
        "annotations": {**cfg.pod_annotations, **meta["annotations"]},
    }


def job_volume(name: str, stage: int) -> dict:
    """The stage's ConfigMap (job.yaml), mounted at CONFIG_DIR."""
    return {
        "name": "job",
        "configMap": {"name": child_name(name, stage), "items": [{"key": "job.yaml", "path": "job.yaml"}]},
    }


def container_security() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security_context(cfg: WorkerConfig) -> dict:
    """runAsNonRoot always; the IDs the worker config gives, a None one left out for the platform to
    assign (OpenShift's restricted SCC refuses fixed UIDs outside the namespace's range); the volumes'
    ownership changed only when their root does not match already (a large claim is not walked at
    every pod start)."""
    ids = {k: v for k, v in cfg.pod_security_context.items() if v is not None}
    return {
        "runAsNonRoot": True,
        **ids,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_spec_base(cfg: WorkerConfig, gpu: bool) -> dict:
    """What every pod the operator has made shares: never root, no API token, RuntimeDefault seccomp,
    the worker config's IDs (UID 1000 by default), service account, pull secrets, priority class,
    scheduler and placement (with the GPU nodes' where `gpu`)."""
    spec: dict = {
        "automountServiceAccountToken": False,  # pods report through the termination message, not the API
        "enableServiceLinks": False,
        "securityContext": pod_security_context(cfg),
    }
    if cfg.service_account_name:
        spec["serviceAccountName"] = cfg.service_account_name
    if cfg.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in cfg.image_pull_secrets]
    if cfg.priority_class_name:
        spec["priorityClassName"] = cfg.priority_class_name
    if cfg.scheduler_name:
        spec["schedulerName"] = cfg.scheduler_name
    node_selector = dict(cfg.node_selector)
    tolerations = copy.deepcopy(cfg.tolerations)
    if gpu:
        node_selector.update(cfg.gpu_node_selector)
        tolerations += copy.deepcopy(cfg.gpu_tolerations)
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def worker_command(stage: int) -> list[str]:
    return ["kondense", "worker", "--job", JOB_FILE, "--stage", str(stage), "--pvc-root", PVC_ROOT]


def build_job(body: dict, job: spec_mod.CompressionJob, stage: int, cfg: WorkerConfig, attempt: int = 0) -> dict:
    """An Indexed Job: one pod per worker, completions = parallelism = workers, pods that never
    restart in place (a rank that dies takes the stage with it), suspended if the spec says so
    (always, under Kueue, which unsuspends it on admission); `attempt`: status.restarts."""
    s = job.spec
    name = child_name(job.name, stage)  # the Service's: the pods' subdomain
    # index=None: the worker index comes from JOB_COMPLETION_INDEX, which an Indexed Job sets itself
    contract = WorkerEnv(
        index=None,
        workers=s.workers,
        slots=s.slots_per_worker,
        coordinator=coordinator(job.name, stage, attempt),
        port=cfg.port,
        backend=s.backend,
    ).to_env()
    volumes, mounts = worker_volumes(job, stage, cfg)
    container = {
        "name": CONTAINER,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": worker_command(stage),
        "env": env_list(contract, cfg),
        "ports": [{"name": "rendezvous", "containerPort": cfg.port, "protocol": "TCP"}],
        "volumeMounts": mounts,
        # rank 0 leaves its stage summary here; if a pod dies before writing it, the log's tail
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }
    requirements = worker_resources(job, cfg)
    if requirements:
        container["resources"] = requirements

    pod_spec: dict = {
        "restartPolicy": "Never",
        "subdomain": name,  # with the headless Service: pods resolve as <job>-<index>.<service>
        **pod_spec_base(cfg, gpu=s.device == "cuda"),
        "containers": [container],
        "volumes": volumes,
    }
    meta = run_metadata(body, stage, attempt)
    spec: dict = {
        "completionMode": "Indexed",
        "completions": s.workers,
        "parallelism": s.workers,
        "backoffLimit": cfg.backoff_limit,
        "podFailurePolicy": pod_failure_policy(),
        "suspend": True if kueue.managed(s) else s.suspend,
        "template": {
            "metadata": pod_metadata(meta, cfg),
            "spec": pod_spec,
        },
    }
    if s.active_deadline_s is not None:
        # counted from the Job's start, and afresh when it is resumed from suspension (Kubernetes'
        # rule) or re-created after a loss (a new Job)
        spec["activeDeadlineSeconds"] = s.active_deadline_s
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def build_children(
    body: dict, job: spec_mod.CompressionJob, stage: int, cfg: WorkerConfig, attempt: int = 0
) -> list[dict]:
    """In creation order: the Job last, so its pods find their Service and ConfigMap."""
    return [
        build_service(body, stage, cfg),
        build_configmap(body, job, stage),
        build_job(body, job, stage, cfg, attempt),
    ]
