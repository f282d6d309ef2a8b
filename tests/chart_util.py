"""Helpers for tests/test_chart.py: the helm and kubectl binaries, rendering the chart, and the
schemas the rendered objects and the examples are checked against."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kondense"
CRD = ROOT / "crds" / "compressionjob.yaml"
CHART_CRD = CHART / "files" / "crd.yaml"  # rendered by templates/compressionjob-crd.yaml
DEPLOY = ROOT / "deploy"
EXAMPLES = ROOT / "examples"
RELEASE = "kondense"
NAMESPACE = "kondense-system"
BIN = Path.home() / ".cache" / "kondense" / "bin"

# The newest Kubernetes whose schemas kubernetes-validate ships (1.37 with kubernetes-validate 1.37.0).
K8S_VERSION = kubernetes_validate.latest_version()


def tool(name: str) -> str:
    """The helm or kubectl binary: $KONDENSE_HELM / $KONDENSE_KUBECTL, else ~/.cache/kondense/bin.
    Missing is a failure, not a skip: `make test` installs both (make helm)."""
    env = f"KONDENSE_{name.upper()}"
    path = os.environ.get(env) or str(BIN / name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"no {name} binary at {path}: run `make helm` (scripts/install-helm.sh) or set {env}", pytrace=False
        )
    return path


def run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def set_args(values: dict | None = None, sets: list[str] | None = None, tmp_path: Path | None = None) -> list[str]:
    args: list[str] = []
    if values:
        assert tmp_path is not None
        f = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
        f.write_text(yaml.safe_dump(values))
        args += ["--values", str(f)]
    for s in sets or []:
        args += ["--set", s]
    return args


def template(*extra: str, check: bool = True, namespace: str = NAMESPACE) -> subprocess.CompletedProcess:
    return run(
        [tool("helm"), "template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds", *extra], check=check
    )


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(*extra: str, namespace: str = NAMESPACE) -> list[dict]:
    return load_all(template(*extra, namespace=namespace).stdout)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def name_of(obj: dict) -> str:
    ns = obj["metadata"].get("namespace")
    return f"{obj['kind']}/{ns + '/' if ns else ''}{obj['metadata']['name']}"


# ---------------------------------------------------------------------------------------------
# schemas


def validate_k8s(obj: dict) -> None:
    """Validate a built-in kind against the Kubernetes OpenAPI schema (strict: no unknown fields)."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise AssertionError(
            f"{name_of(obj)} is not a valid {obj['kind']} (Kubernetes {K8S_VERSION}): {path}: {e.message}"
        ) from None


def _plain_jsonschema(node, strict_objects: bool):
    """An OpenAPI v3 (structural) schema as a draft-4 JSON schema: x-kubernetes-* keys dropped;
    with strict_objects, an object listing properties refuses others (the API server would
    prune them silently, which hides typos)."""
    if isinstance(node, list):
        return [_plain_jsonschema(n, strict_objects) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _plain_jsonschema(v, strict_objects) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if (
        strict_objects
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schema(crd_path: Path = CRD, strict: bool = True) -> dict:
    crd = yaml.safe_load(crd_path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = _plain_jsonschema(copy.deepcopy(version["schema"]["openAPIV3Schema"]), strict)
    return schema


def validate_compressionjob(obj: dict) -> None:
    validator = jsonschema.Draft4Validator(crd_schema())  # OpenAPI 3.0: boolean exclusiveMinimum
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        raise AssertionError(
            f"{name_of(obj)} does not match the CRD's schema: "
            + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
        )


# kubernetes-validate ships schemas for built-in kinds only, so the ServiceMonitor is checked
# against this subset of the Prometheus Operator's monitoring.coreos.com/v1 CRD (the fields the
# chart writes, with their types; unknown fields refused so a misspelt one fails here).
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": "string"},
                        },
                        "matchExpressions": {"type": "array"},
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                            },
                            "scrapeTimeout": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                            },
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


def validate_any(obj: dict) -> None:
    """Validate one object with the schema for its kind; unknown kinds are an error."""
    if obj["apiVersion"] == "kondense.dev/v1alpha1" and obj["kind"] == "CompressionJob":
        validate_compressionjob(obj)
    elif obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["kind"] == "ServiceMonitor":
        errors = list(jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).iter_errors(obj))
        assert not errors, f"{name_of(obj)}: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    else:
        validate_k8s(obj)


def values_schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def default_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def rule_triples(rules: list[dict]) -> set[tuple[str, str, str]]:
    """RBAC rules as (apiGroup, resource, verb) triples: equal sets grant exactly the same."""
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v))
    return out
