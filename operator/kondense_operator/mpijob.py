"""Pure builders of a backend-mpi stage: the ConfigMap with the job manifest (as for an Indexed
Job) and one Kubeflow MPIJob (kubeflow.org/v2beta1, served by the MPI operator v2). No API calls.

mpirun across pods needs what the MPI operator provides: an ssh key pair (a Secret it mounts at
spec.sshAuthMountPath in every pod), a host file listing the worker pods (OMPI_MCA_orte_default_hostfile
in the launcher) and a headless Service for their names. So on Kubernetes backend mpi means one
MPIJob per stage, with the same name, labels, owner reference, pod security, volumes, resources
and placement as the Indexed Job of the other backends:

- Launcher (one pod, restartPolicy Never; runPolicy.backoffLimit is the worker config's
  backoffLimit): the Indexed Job's command and KONDENSE_* contract with KONDENSE_BACKEND=mpi.
  `kondense worker` then is the MPI launcher: it runs `mpirun -np WORKERS*SLOTS` over the host
  file, forwards the ranks' environment itself, and writes rank 0's stage summary (relayed over
  mpirun's stdout) to its own termination message, which the operator reads. No GPU, no claims.
- Worker (spec.workers pods, slotsPerWorker ranks each): sshd as UID 1000 on port SSH_PORT (the
  worker config refuses another runAsUser while mpiJob is enabled: sshd logs in that user only), from
  the worker image's SSHD_CONFIG, with the MPI operator's key as host key and authorized key
  (docs/operator.md, "MPI (Kubeflow MPIJob)"); the ranks mpirun starts there get the claims,
  /dev/shm, the zoo cache and the GPUs (nvidia.com/gpu = slotsPerWorker for device cuda).
"""

from __future__ import annotations

import copy

from kondense.job import spec as spec_mod
from kondense.job.worker_env import COORDINATOR, PORT, WorkerEnv

from . import children, kueue
from .config import WorkerConfig
from .kube import MPI_GROUP, MPI_VERSION

API_VERSION = f"{MPI_GROUP}/{MPI_VERSION}"
KIND = "MPIJob"
LAUNCHER, WORKER = "Launcher", "Worker"  # spec.mpiReplicaSpecs keys
LAUNCHER_CONTAINER = "launcher"
# our own label on both pod templates (the MPI operator keeps template labels): which pod is which
ROLE_LABEL = "kondense.dev/mpi-role"
# the MPI operator's label on worker pods: 0 .. workers-1
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"

# what the worker image's sshd and ssh client agree on (Dockerfile, target worker)
SSH_PORT = 2222  # above 1024: sshd runs as UID 1000 with every capability dropped
SSHD_CONFIG = "/etc/ssh/kondense/sshd_config"

# status reasons of the two ways a backend-mpi job cannot run here
DISABLED = "MPIJobDisabled"
CRD_MISSING = "MPIJobCRDMissing"


def disabled_message() -> str:
    return (
        "spec.backend mpi runs as a Kubeflow MPIJob per stage, which this operator is not set up for: "
        "set mpiJob.enabled: true in its worker config (Helm: --set workers.mpiJob.enabled=true, which "
        "also grants it the rights on mpijobs.kubeflow.org) with the MPI operator v2 installed, then "
        "create the CompressionJob again; or use backend torch or horovod"
    )


def crd_missing_message(stage: int, namespace: str) -> str:
    return (
        f"stage {stage}: the API server does not serve {KIND} ({API_VERSION}, mpijobs) in namespace "
        f"{namespace} (404): install the MPI operator v2 (kubeflow/mpi-operator v0.4.0 or later, whose "
        "CRD mpijobs.kubeflow.org serves v2beta1), restart kondense-operator so that it watches MPIJobs, "
        "and create the CompressionJob again"
    )


def sshd_command(cfg: WorkerConfig) -> list[str]:
    """sshd in the foreground, logging to stderr, as UID 1000. The worker image's config sets the
    port, the pid file (in /tmp) and no passwords; the key paths follow sshAuthMountPath, where
    the MPI operator mounts its key pair (the same key serves as host key: no writable /etc/ssh)."""
    keys = cfg.mpi_job["sshAuthMountPath"]
    return [
        "/usr/sbin/sshd",
        "-D",
        "-e",
        "-f",
        SSHD_CONFIG,
        "-h",
        f"{keys}/id_rsa",
        "-o",
        f"AuthorizedKeysFile={keys}/authorized_keys",
    ]


def _template(meta: dict, cfg: WorkerConfig, role: str, pod_spec: dict) -> dict:
    return {"metadata": children.pod_metadata(meta, cfg, **{ROLE_LABEL: role}), "spec": pod_spec}


def _launcher(job: spec_mod.CompressionJob, stage: int, cfg: WorkerConfig) -> dict:
    s = job.spec
    # worker 0, the only one that runs `kondense worker`; rank 0 chooses where the ranks meet, so
    # there is no coordinator or port to name
    contract = WorkerEnv(index=0, workers=s.workers, slots=s.slots_per_worker, backend=s.backend).to_env()
    for name in (COORDINATOR, PORT):
        contract.pop(name, None)
    container = {
        "name": LAUNCHER_CONTAINER,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": children.worker_command(stage),
        "env": children.env_list(contract, cfg),
        "volumeMounts": [
            {"name": "job", "mountPath": children.CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        # the stage summary (rank 0's, relayed by mpirun); if the launcher dies first, its log's tail
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": children.container_security(),
    }
    resources = copy.deepcopy(cfg.mpi_job.get("launcherResources") or {})
    resources = {k: v for k, v in resources.items() if v}
    if resources:
        container["resources"] = resources
    return {
        **children.pod_spec_base(cfg, gpu=False),
        "containers": [container],
        "volumes": [children.job_volume(job.name, stage), {"name": "tmp", "emptyDir": {}}],
    }


def _worker(job: spec_mod.CompressionJob, stage: int, cfg: WorkerConfig) -> dict:
    s = job.spec
    volumes, mounts = children.worker_volumes(job, stage, cfg)
    container = {
        "name": children.CONTAINER,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": sshd_command(cfg),
        # sshd's sessions do not inherit it: mpirun gives the ranks the launcher's environment
        "env": children.env_list({}, cfg),
        "ports": [{"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"}],
        # Ready once sshd listens: the launcher waits for every worker to be Ready (WaitForWorkersReady)
        "readinessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": 2, "failureThreshold": 3},
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": children.container_security(),
    }
    resources = children.worker_resources(job, cfg)
    if resources:
        container["resources"] = resources
    return {**children.pod_spec_base(cfg, gpu=s.device == "cuda"), "containers": [container], "volumes": volumes}


def build_mpijob(body: dict, job: spec_mod.CompressionJob, stage: int, cfg: WorkerConfig, attempt: int = 0) -> dict:
    """One MPIJob for one stage: a launcher and spec.workers sshd pods, no retries (backoffLimit as
    the Indexed Job's), running workers removed once the launcher ended, suspended if the spec says so
    (always, under Kueue); named and labelled for `attempt` (status.restarts) as the Indexed Job."""
    s = job.spec
    meta = children.run_metadata(body, stage, attempt)
    run_policy: dict = {
        "cleanPodPolicy": "Running",
        "backoffLimit": cfg.backoff_limit,
        "suspend": True if kueue.managed(s) else s.suspend,
    }
    if s.active_deadline_s is not None:
        run_policy["activeDeadlineSeconds"] = s.active_deadline_s
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": meta,
        "spec": {
            "slotsPerWorker": s.slots_per_worker,
            "runLauncherAsWorker": False,
            "sshAuthMountPath": cfg.mpi_job["sshAuthMountPath"],
            "mpiImplementation": "OpenMPI",
            # the launcher starts once every worker's sshd is up (MPI operator v0.5.0 and later; older
            # ones prune the field and start it at once, and ssh retries the workers for a while)
            "launcherCreationPolicy": "WaitForWorkersReady",
            "runPolicy": run_policy,
            "mpiReplicaSpecs": {
                LAUNCHER: {
                    "replicas": 1,
                    "restartPolicy": "Never",  # the MPI operator's default for the launcher is OnFailure
                    "template": _template(meta, cfg, "launcher", _launcher(job, stage, cfg)),
                },
                WORKER: {
                    "replicas": s.workers,
                    "restartPolicy": "Never",
                    "template": _template(meta, cfg, "worker", _worker(job, stage, cfg)),
                },
            },
        },
    }


def build_children(
    body: dict, job: spec_mod.CompressionJob, stage: int, cfg: WorkerConfig, attempt: int = 0
) -> list[dict]:
    """In creation order: the ConfigMap, then the MPIJob whose pods mount it. No Service: the MPI
    operator makes its own for the pods' names."""
    return [children.build_configmap(body, job, stage), build_mpijob(body, job, stage, cfg, attempt)]


def suspended(obj: dict) -> bool:
    """Whether a stage's Job or MPIJob is suspended as it stands."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == KIND:
        return bool((spec.get("runPolicy") or {}).get("suspend"))
    return bool(spec.get("suspend"))
