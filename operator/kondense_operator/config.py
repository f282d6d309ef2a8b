"""Operator settings: what the command line and the environment say, and the worker config file.

The worker config (--worker-config / KONDENSE_WORKER_CONFIG) is the cluster admin's say over
the pods the operator creates: image, pull policy, service account, node placement, default
resources, the port the ranks meet on, a PVC that caches zoo weights across jobs, the pods'
pull secrets, labels, annotations, priority class, scheduler, extra env and IDs, and whether
backend mpi runs (as one Kubeflow MPIJob per stage: the mpiJob switch, off by default).
worker-config.schema.json, next to this file, declares it once: its keys, their types and their
defaults. The Helm chart's values.schema.json copies its definitions (scripts/sync-values-schema.py).
Unknown keys are errors, so a typo in the Helm values fails the operator at start, loudly.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_FILE = "worker-config.schema.json"
DEFAULT_METRICS_PORT = 9090
DEFAULT_HEALTH_PORT = 8080
# a 403 is retried this slowly: it waits for an admin, and each try posts nothing new
DEFAULT_FORBIDDEN_RETRY_S = 300.0
# every unfinished job is looked at again this often, so that a missed watch event cannot leave it stuck
DEFAULT_RECHECK_S = 30.0
# kopf's own default: a peer's keep-alive record counts this long, so a standby takes over at most
# this long after the active operator died without saying goodbye (SIGKILL, a lost node)
DEFAULT_PEERING_LIFETIME_S = 60


class ConfigError(ValueError):
    """A bad operator setting; the message names the setting."""


_SCHEMA: dict = json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
_VALIDATOR = jsonschema.Draft7Validator(_SCHEMA)
KEYS: tuple[str, ...] = tuple(_SCHEMA["properties"])
MPI_JOB_DEFAULTS: dict = _SCHEMA["properties"]["mpiJob"]["default"]
POD_SECURITY_DEFAULTS: dict = _SCHEMA["properties"]["podSecurityContext"]["default"]
# the worker image's user, whose ~/.ssh sshd reads (backend mpi): it must run as exactly this UID
MPI_SSH_UID = 1000


def worker_config_schema() -> dict:
    """The JSON Schema of the worker config file (a fresh copy: callers may change it)."""
    return copy.deepcopy(_SCHEMA)


def attribute(key: str) -> str:
    """The WorkerConfig attribute of a file key: imagePullPolicy -> image_pull_policy."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _default(key: str) -> Any:
    """A dataclass field whose default is the schema's; each instance gets its own copy, since
    mappings and lists are mutable."""
    value = _SCHEMA["properties"][key]["default"]
    return field(default_factory=lambda: copy.deepcopy(value))


@dataclass(frozen=True)
class WorkerConfig:
    """How worker pods look, beyond what a CompressionJob says: the worker config file's keys,
    snake_cased, with the schema's defaults."""

    image: str = _default("image")
    image_pull_policy: str = _default("imagePullPolicy")
    service_account_name: str = _default("serviceAccountName")
    zoo_cache_claim: str = _default("zooCacheClaim")
    node_selector: dict = _default("nodeSelector")
    tolerations: list = _default("tolerations")
    gpu_node_selector: dict = _default("gpuNodeSelector")
    gpu_tolerations: list = _default("gpuTolerations")
    resources: dict = _default("resources")
    port: int = _default("port")
    backoff_limit: int = _default("backoffLimit")
    # the file's mapping (enabled, sshAuthMountPath, launcherResources), a key left out at its default
    mpi_job: dict = _default("mpiJob")
    image_pull_secrets: list = _default("imagePullSecrets")
    pod_annotations: dict = _default("podAnnotations")
    pod_labels: dict = _default("podLabels")
    priority_class_name: str = _default("priorityClassName")
    scheduler_name: str = _default("schedulerName")
    env: list = _default("env")
    # runAsUser, runAsGroup, fsGroup: a key left out at its default, a None one left out of the pods
    pod_security_context: dict = _default("podSecurityContext")
    shm_size_limit: str = _default("shmSizeLimit")

    def __post_init__(self) -> None:
        given = self.mpi_job or {}
        object.__setattr__(self, "mpi_job", {**copy.deepcopy(MPI_JOB_DEFAULTS), **given})
        ids = {**POD_SECURITY_DEFAULTS, **(self.pod_security_context or {})}
        object.__setattr__(self, "pod_security_context", ids)
        if self.mpi_enabled and ids["runAsUser"] != MPI_SSH_UID:
            # sshd (backend mpi) logs in the image's user only: another or an assigned UID has no
            # passwd entry and no ~/.ssh, and every rank would fail to start
            raise ConfigError(
                f"podSecurityContext.runAsUser must be {MPI_SSH_UID} while mpiJob.enabled is true, got "
                f"{ids['runAsUser']!r}: backend mpi's sshd runs as the worker image's UID {MPI_SSH_UID}. "
                "On OpenShift keep the UIDs and grant the workers' ServiceAccount the nonroot-v2 SCC, "
                "or set mpiJob.enabled: false"
            )

    @property
    def mpi_enabled(self) -> bool:
        """Backend mpi runs as one Kubeflow MPIJob per stage (and the operator watches MPIJobs)."""
        return bool(self.mpi_job["enabled"])


def worker_config_from_dict(data: Any, where: str = "worker config") -> WorkerConfig:
    """The WorkerConfig a loaded worker config file describes; ConfigError names each bad key."""
    if data is None:
        data = {}
    if isinstance(data, dict):  # an empty Helm value means "the default"
        data = {k: v for k, v in data.items() if v is not None}
    _check(data, where)
    try:
        return WorkerConfig(**{attribute(k): v for k, v in data.items()})
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_worker_config(path: str | Path | None, image: str | None = None) -> WorkerConfig:
    """The worker config from `path` (None: defaults), with `image` (--worker-image) on top."""
    data = None
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"--worker-config {path}: cannot read it: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"--worker-config {path}: not valid YAML: {e}") from None
    cfg = worker_config_from_dict(data, f"--worker-config {path}" if path else "worker config")
    if image:
        _check({"image": image}, "--worker-image")
        cfg = dataclasses.replace(cfg, image=image)
    return cfg


def _check(data: Any, where: str) -> None:
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError(f"{where}: " + "; ".join(_explain(e) for e in errors))


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
}


def _explain(error: jsonschema.ValidationError) -> str:
    """One schema error as the admin should read it: the key's path, what it must be, and a guess
    where the value looks like a typo of an allowed one."""
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    schema, value = error.schema, error.instance
    if error.validator == "additionalProperties":
        known = list(schema.get("properties", {}))
        where = f"{path}: " if path else ""
        return "; ".join(
            f"{where}unknown key {k!r}{_did_you_mean(k, known)}; known: {', '.join(known)}"
            for k in value
            if k not in known
        )
    if not path and error.validator == "type":
        return f"must be a mapping of {', '.join(KEYS)}, got {value!r}"
    if "description" in schema:
        what = schema["description"]
    elif error.validator == "enum":
        what = "one of " + ", ".join(repr(v) for v in error.validator_value)
    elif error.validator == "type":
        what = _TYPE_NAMES.get(error.validator_value, str(error.validator_value))
    else:
        return f"{path}: {error.message}"
    hint = _did_you_mean(value, schema["enum"]) if "enum" in schema and isinstance(value, str) else ""
    return f"{path} must be {what}, got {value!r}{hint}"


def _did_you_mean(word: Any, choices: list) -> str:
    by_lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    metrics_port: int = DEFAULT_METRICS_PORT
    health_port: int = DEFAULT_HEALTH_PORT
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    forbidden_retry_s: float = DEFAULT_FORBIDDEN_RETRY_S
    recheck_s: float = DEFAULT_RECHECK_S
    # kopf peering object's name (--peering); None: standalone, the only operator of its scope
    peering: str | None = None
    peering_lifetime_s: int = DEFAULT_PEERING_LIFETIME_S

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def namespaces_from_env(environ: dict | None = None) -> tuple[str, ...]:
    raw = (environ if environ is not None else os.environ).get("KONDENSE_WATCH_NAMESPACES", "")
    return tuple(n.strip() for n in raw.split(",") if n.strip())
