"""Operator settings: what the command line and the environment say, and the worker config file.

The worker config (--worker-config / KONDENSE_WORKER_CONFIG) is the cluster admin's say over
the pods the operator creates: image, pull policy, service account, node placement, default
resources, the port the ranks meet on, and a PVC that caches zoo weights across jobs.
Unknown keys are errors, so a typo in the Helm values fails the operator at start, loudly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_IMAGE = "kondense/kondense:0.1.0"
DEFAULT_PORT = 29500
DEFAULT_METRICS_PORT = 9090
DEFAULT_HEALTH_PORT = 8080
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class ConfigError(ValueError):
    """A bad operator setting; the message names the setting."""


@dataclass(frozen=True)
class WorkerConfig:
    """How worker pods look, beyond what a CompressionJob says."""

    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    service_account_name: str = ""          # empty: the namespace's default; its token is never mounted
    zoo_cache_claim: str = ""               # a PVC for KONDENSE_HOME; empty: an emptyDir per pod
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    gpu_node_selector: dict = field(default_factory=dict)   # added for device: cuda
    gpu_tolerations: list = field(default_factory=list)     # added for device: cuda
    resources: dict = field(default_factory=dict)           # defaults under a job's spec.resources
    port: int = DEFAULT_PORT
    backoff_limit: int = 0   # a distributed stage cannot retry one pod alone: 0 fails the stage at once


# YAML key -> (attribute, type check, what it must be)
_KEYS: dict[str, tuple[str, type | tuple, str]] = {
    "image": ("image", str, "a string"),
    "imagePullPolicy": ("image_pull_policy", str, "one of " + ", ".join(PULL_POLICIES)),
    "serviceAccountName": ("service_account_name", str, "a string"),
    "zooCacheClaim": ("zoo_cache_claim", str, "a string"),
    "nodeSelector": ("node_selector", dict, "a mapping"),
    "tolerations": ("tolerations", list, "a list"),
    "gpuNodeSelector": ("gpu_node_selector", dict, "a mapping"),
    "gpuTolerations": ("gpu_tolerations", list, "a list"),
    "resources": ("resources", dict, "a mapping"),
    "port": ("port", int, "an integer port"),
    "backoffLimit": ("backoff_limit", int, "an integer >= 0"),
}


def worker_config_from_dict(data: dict | None, where: str = "worker config") -> WorkerConfig:
    if data is None:
        return WorkerConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of {', '.join(_KEYS)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(_KEYS)}")
        if value is None:  # an empty Helm value means "the default"
            continue
        attr, kind, what = _KEYS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be {what}, got {value!r}")
        values[attr] = value
    cfg = WorkerConfig(**values)
    if cfg.image_pull_policy not in PULL_POLICIES:
        raise ConfigError(f"{where}: imagePullPolicy must be one of {', '.join(PULL_POLICIES)}, got {cfg.image_pull_policy!r}")
    if not 1 <= cfg.port <= 65535:
        raise ConfigError(f"{where}: port must be in 1..65535, got {cfg.port}")
    if cfg.backoff_limit < 0:
        raise ConfigError(f"{where}: backoffLimit must be >= 0, got {cfg.backoff_limit}")
    if not cfg.image:
        raise ConfigError(f"{where}: image must not be empty")
    return cfg


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
        cfg = WorkerConfig(**{**cfg.__dict__, "image": image})
    return cfg


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()   # empty: all namespaces
    metrics_port: int = DEFAULT_METRICS_PORT
    health_port: int = DEFAULT_HEALTH_PORT
    worker: WorkerConfig = field(default_factory=WorkerConfig)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def namespaces_from_env(environ: dict | None = None) -> tuple[str, ...]:
    raw = (environ if environ is not None else os.environ).get("KONDENSE_WATCH_NAMESPACES", "")
    return tuple(n.strip() for n in raw.split(",") if n.strip())
