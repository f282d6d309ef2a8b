"""The worker config file (--worker-config): worker-config.schema.json declares it, config.py
validates against it and maps it onto WorkerConfig. No API server, no helm."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest

from kondense_operator import config
from kondense_operator.cli import parse_config
from kondense_operator.config import ConfigError, WorkerConfig, load_worker_config, worker_config_from_dict

FULL = {
    "image": "reg.example.com:5000/kondense:1.2",
    "imagePullPolicy": "Always",
    "serviceAccountName": "ml-worker",
    "zooCacheClaim": "zoo-weights",
    "nodeSelector": {"pool": "cpu"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "gpuNodeSelector": {"nvidia.com/gpu.present": "true"},
    "gpuTolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}
    ],
    "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": 4, "memory": "8Gi"}},
    "port": 23456,
    "backoffLimit": 2,
    "mpiJob": {
        "enabled": True,
        "sshAuthMountPath": "/home/mpiuser/.ssh",
        "launcherResources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
    },
    "imagePullSecrets": ["regcred", "mirror.pull"],
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "podLabels": {"team": "ml", "example.com/cost-center": "42"},
    "priorityClassName": "batch-low",
    "schedulerName": "volcano",
    "env": [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "http_proxy", "value": ""}],
    "podSecurityContext": {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000},
    "shmSizeLimit": "2Gi",
}


def test_schema_declares_exactly_the_dataclass():
    schema = config.worker_config_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert [config.attribute(k) for k in schema["properties"]] == [f.name for f in dataclasses.fields(WorkerConfig)]
    assert FULL.keys() == schema["properties"].keys()  # the test below sets every key


def test_defaults_come_from_the_schema():
    schema = config.worker_config_schema()
    defaults = {k: p["default"] for k, p in schema["properties"].items()}
    assert not list(jsonschema.Draft7Validator(schema).iter_errors(defaults)), "the schema's defaults must be valid"
    assert WorkerConfig() == WorkerConfig(**{config.attribute(k): v for k, v in defaults.items()})
    cfg = WorkerConfig()
    assert (cfg.image, cfg.port, cfg.backoff_limit) == ("ghcr.io/kondense/kondense-worker:0.1.0", 29500, 0)
    assert WorkerConfig().node_selector is not WorkerConfig().node_selector  # no shared mutable default


@pytest.mark.parametrize("data", [None, {}, {k: None for k in FULL}])
def test_absent_and_empty_values_mean_the_defaults(data):
    assert worker_config_from_dict(data) == WorkerConfig()


def test_every_key_reaches_its_attribute():
    cfg = worker_config_from_dict(FULL)
    assert {config.attribute(k): v for k, v in FULL.items()} == dataclasses.asdict(cfg)
    assert cfg.image_pull_policy == "Always" and cfg.gpu_tolerations[0]["tolerationSeconds"] == 60


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"imagee": "x"}, "unknown key 'imagee' (did you mean 'image'?); known: image, imagePullPolicy,"),
        ({"PORT": 1}, "unknown key 'PORT' (did you mean 'port'?)"),
        ({"replicas": 2}, "unknown key 'replicas'; known: image,"),
        ({"port": 0}, "port must be a TCP port, 1 to 65535, got 0"),
        ({"port": 65536}, "port must be a TCP port, 1 to 65535, got 65536"),
        ({"port": "29500"}, "port must be a TCP port, 1 to 65535, got '29500'"),
        ({"port": True}, "port must be a TCP port, 1 to 65535, got True"),
        ({"backoffLimit": -1}, "backoffLimit must be an integer >= 0, got -1"),
        ({"backoffLimit": 1.5}, "backoffLimit must be an integer >= 0, got 1.5"),
        ({"image": ""}, "image must be a non-empty image reference"),
        ({"image": "a b"}, "image must be a non-empty image reference without spaces, e.g. "),
        ({"image": 3}, "image must be a non-empty image reference"),
        (
            {"imagePullPolicy": "Sometimes"},
            "imagePullPolicy must be an image pull policy: Always, IfNotPresent or Never, got 'Sometimes'",
        ),
        ({"imagePullPolicy": "ifnotpresent"}, "got 'ifnotpresent' (did you mean 'IfNotPresent'?)"),
        ({"serviceAccountName": "ML_Worker"}, "serviceAccountName must be an object name (DNS-1123 subdomain"),
        ({"zooCacheClaim": ["zoo"]}, "zooCacheClaim must be an object name"),
        ({"nodeSelector": ["a"]}, "nodeSelector must be a mapping of strings to strings"),
        (
            {"gpuNodeSelector": {"nvidia.com/gpu.present": True}},
            "gpuNodeSelector.nvidia.com/gpu.present must be a string, got True",
        ),
        ({"tolerations": {"key": "x"}}, "tolerations must be a list of tolerations, got {'key': 'x'}"),
        (
            {"gpuTolerations": [{"key": "g", "operator": "Exist"}]},
            "gpuTolerations[0].operator must be one of 'Exists', 'Equal', got 'Exist' (did you mean 'Exists'?)",
        ),
        (
            {"tolerations": [{"key": "g", "efect": "NoSchedule"}]},
            "tolerations[0]: unknown key 'efect' (did you mean 'effect'?)",
        ),
        (
            {"tolerations": ["gpu"]},
            "tolerations[0] must be a toleration: key, operator, value, effect, tolerationSeconds",
        ),
        (
            {"resources": {"request": {"cpu": "1"}}},
            "resources: unknown key 'request' (did you mean 'requests'?); known: requests, limits",
        ),
        (
            {"resources": {"requests": {"cpu": "lots"}}},
            "resources.requests.cpu must be a resource quantity such as 500m, 2Gi or 4, got 'lots'",
        ),
        ({"resources": {"limits": {"memory": -1}}}, "resources.limits.memory must be a resource quantity"),
        ({"resources": "big"}, "resources must be a container's resources: requests and limits, got 'big'"),
        ({"mpiJob": {"enabled": "yes"}}, "mpiJob.enabled must be true or false, got 'yes'"),
        ({"mpiJob": {"enable": True}}, "mpiJob: unknown key 'enable' (did you mean 'enabled'?)"),
        ({"mpiJob": {"sshAuthMountPath": ".ssh"}}, "mpiJob.sshAuthMountPath must be an absolute directory path"),
        ({"mpiJob": {"sshAuthMountPath": "/home/u/.ssh/"}}, "mpiJob.sshAuthMountPath must be an absolute directory"),
        (
            {"mpiJob": {"launcherResources": {"limits": {"cpu": "lots"}}}},
            "mpiJob.launcherResources.limits.cpu must be a resource quantity",
        ),
        ({"mpiJob": True}, "mpiJob must be a mapping of enabled (true or false), sshAuthMountPath"),
        ({"imagePullSecrets": "regcred"}, "imagePullSecrets must be a list of Secret names, got 'regcred'"),
        (
            {"imagePullSecrets": [{"name": "regcred"}]},
            "imagePullSecrets[0] must be the name of a Secret of type kubernetes.io/dockerconfigjson (a plain name",
        ),
        ({"podAnnotations": {"a": 1}}, "podAnnotations.a must be a string, got 1"),
        (
            {"podLabels": {"kondense.dev/job": "x"}},
            "podLabels must be a label key the operator does not set itself (not kondense.dev/*",
        ),
        ({"podLabels": {"app.kubernetes.io/component": "x"}}, "got 'app.kubernetes.io/component'"),
        ({"podLabels": {"batch.kubernetes.io/job-completion-index": "0"}}, "podLabels must be a label key"),
        ({"priorityClassName": "High"}, "priorityClassName must be an object name"),
        ({"schedulerName": "my scheduler"}, "schedulerName must be an object name"),
        (
            {"env": [{"name": "KONDENSE_WORKERS", "value": "8"}]},
            "env[0].name must be a variable name the operator does not set itself (not KONDENSE_*, HOME,"
            " PYTHONDONTWRITEBYTECODE, PYTHONUNBUFFERED or JOB_COMPLETION_INDEX: the worker reads those),"
            " got 'KONDENSE_WORKERS'",
        ),
        ({"env": [{"name": "OK", "value": "1"}, {"name": "HOME", "value": "/"}]}, "env[1].name must be a variable"),
        ({"env": [{"name": "N", "value": 1}]}, "env[0].value must be a string (quote numbers and booleans), got 1"),
        ({"env": [{"name": "N"}]}, "env[0] must be a mapping of name and value (strings), got {'name': 'N'}"),
        ({"env": {"N": "1"}}, "env must be a list of {name, value}"),
        ({"podSecurityContext": {"runAsUser": 0}}, "podSecurityContext.runAsUser must be a user ID above 0"),
        ({"podSecurityContext": {"fsGroup": "1000"}}, "podSecurityContext.fsGroup must be an integer ID, or null"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext: unknown key 'runAsNonRoot'"),
        ({"shmSizeLimit": "lots"}, "shmSizeLimit must be a quantity such as 1Gi, or empty for no limit, got 'lots'"),
        (
            {"podSecurityContext": {"runAsUser": None}},
            "podSecurityContext.runAsUser must be 1000 while mpiJob.enabled is true, got None",
        ),
        ({"podSecurityContext": {"runAsUser": 2000}}, "grant the workers' ServiceAccount the nonroot-v2 SCC"),
    ],
)
def test_bad_value_is_named(patch, expected):
    with pytest.raises(ConfigError) as e:
        worker_config_from_dict({**FULL, **patch}, "--worker-config /etc/w.yaml")
    assert str(e.value).startswith("--worker-config /etc/w.yaml: ")
    assert expected in str(e.value)


@pytest.mark.parametrize("data", [["image: x"], "image: x", 3])
def test_not_a_mapping(data):
    with pytest.raises(
        ConfigError, match=r"^worker config: must be a mapping of image, imagePullPolicy, .*, backoffLimit"
    ):
        worker_config_from_dict(data)


def test_mpi_job_keys_left_out_keep_their_defaults():
    """mpiJob is off by default; a mapping that names some of its keys keeps the others' defaults."""
    assert WorkerConfig().mpi_enabled is False
    assert WorkerConfig().mpi_job == {
        "enabled": False,
        "sshAuthMountPath": "/home/kondense/.ssh",
        "launcherResources": {},
    }
    on = worker_config_from_dict({"mpiJob": {"enabled": True}})
    assert on.mpi_enabled and on.mpi_job["sshAuthMountPath"] == "/home/kondense/.ssh"
    assert on == WorkerConfig(mpi_job={"enabled": True})
    assert worker_config_from_dict({"mpiJob": None}) == WorkerConfig()
    assert WorkerConfig().mpi_job is not WorkerConfig().mpi_job


def test_every_bad_key_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        worker_config_from_dict({"port": 0, "backoffLimit": -1, "imagee": "x"})
    message = str(e.value)
    assert "port must be" in message and "backoffLimit must be" in message and "unknown key 'imagee'" in message


def test_load_worker_config_file(tmp_path):
    path = tmp_path / "worker.yaml"
    path.write_text("image: reg/kondense:1\nport: 23456\nnodeSelector: {pool: ml}\nresources:\n")
    cfg = load_worker_config(path)
    assert (cfg.image, cfg.port, cfg.node_selector, cfg.resources) == ("reg/kondense:1", 23456, {"pool": "ml"}, {})
    assert load_worker_config(path, image="other:2") == dataclasses.replace(cfg, image="other:2")
    assert load_worker_config(None) == WorkerConfig()
    path.write_text("")  # an empty file: the defaults
    assert load_worker_config(path) == WorkerConfig()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("port: 70000\n", "port must be a TCP port, 1 to 65535, got 70000"),
        ("port: [\n", "not valid YAML"),
        (None, "cannot read it"),
    ],
)
def test_load_worker_config_errors_name_the_file(tmp_path, text, expected):
    path = tmp_path / "worker.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_worker_config(path)
    assert str(e.value).startswith(f"--worker-config {path}: ")
    assert expected in str(e.value)


def test_worker_image_is_checked_like_the_file():
    with pytest.raises(ConfigError, match=r"^--worker-image: image must be a non-empty image reference"):
        load_worker_config(None, image="has space:1")


def test_cli_exits_with_the_message(tmp_path, capsys):
    path = tmp_path / "worker.yaml"
    path.write_text("imagePullPolicy: always\n")
    with pytest.raises(SystemExit) as e:
        parse_config(["--worker-config", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"kondense-operator: --worker-config {path}: imagePullPolicy must be" in err
    assert "(did you mean 'Always'?)" in err


def test_pod_ids_left_out_keep_their_defaults_and_null_drops_them():
    """podSecurityContext merges key by key, as mpiJob; null (in the file, or Helm's deleted key the
    chart renders as null) leaves an ID out of the pods, for OpenShift's restricted SCC."""
    assert WorkerConfig().pod_security_context == {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}
    some = worker_config_from_dict({"podSecurityContext": {"fsGroup": 5000}})
    assert some.pod_security_context == {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 5000}
    none = worker_config_from_dict({"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}})
    assert none.pod_security_context == {"runAsUser": None, "runAsGroup": None, "fsGroup": None}
    assert worker_config_from_dict({"podSecurityContext": None}) == WorkerConfig()


def test_mpi_needs_the_image_user():
    """sshd logs in UID 1000 only: a config that would start MPI workers under another UID is refused
    when it is loaded, not when the first rank fails to start."""
    with pytest.raises(ConfigError, match=r"^worker config: podSecurityContext.runAsUser must be 1000 while"):
        worker_config_from_dict({"mpiJob": {"enabled": True}, "podSecurityContext": {"runAsUser": None}})
    # the IDs may still go with backend mpi off, and the groups may go with it on
    worker_config_from_dict({"podSecurityContext": {"runAsUser": None}})
    worker_config_from_dict({"mpiJob": {"enabled": True}, "podSecurityContext": {"fsGroup": None}})
