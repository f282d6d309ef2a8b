"""The CRD's schema against kondense.job.spec: what the API server would accept or refuse.

jsonschema checks the openAPIV3Schema (OpenAPI 3.0 ≈ JSON Schema draft 4: boolean
exclusiveMinimum; x-kubernetes-* keys are ignored by jsonschema). Two API-server behaviours are
emulated here: defaults are applied before validation, and unknown fields are refused (kubectl's
strict field validation; structural schemas would otherwise prune them). The
x-kubernetes-validations CEL rules run under cel-python with self (and oldSelf on updates)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from kondense.job import spec as spec_mod

from .conftest import CRD_PATH, REPO, cj_manifest

CRD = yaml.safe_load(CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    """JSON Schema with unknown fields refused wherever the structural schema lists properties."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


VALIDATOR = jsonschema.Draft4Validator(strict(SCHEMA))


def defaulted(obj: Any, schema: dict = SCHEMA) -> Any:
    """The API server applies `default`s before validation and CEL."""
    if isinstance(obj, dict) and "properties" in schema:
        obj = dict(obj)
        for key, sub in schema["properties"].items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = defaulted(obj[key], sub)
    return obj


_CEL = celpy.Environment()


def cel_errors(new: Any, old: Any = None, schema: dict = SCHEMA, path: str = "") -> list[str]:
    """Messages of the failing x-kubernetes-validations rules; transition rules (oldSelf) only
    where an old value exists, as on an update."""
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"] and old is None:
            continue
        activation = {"self": celpy.json_to_cel(new)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        if not bool(_CEL.program(_CEL.compile(rule["rule"])).evaluate(activation)):
            errors.append(f"{path}: {rule['message']}")
    if isinstance(new, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in new:
                errors += cel_errors(new[key], old.get(key) if isinstance(old, dict) else None, sub, f"{path}.{key}")
    if isinstance(new, list) and "items" in schema:
        for i, item in enumerate(new):
            errors += cel_errors(item, None, schema["items"], f"{path}[{i}]")
    return errors


def api_server_accepts(manifest: dict, old: dict | None = None) -> list[str]:
    """Every reason the API server would refuse `manifest` ([] = accepted)."""
    obj = defaulted(manifest)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in VALIDATOR.iter_errors(obj)]
    return errors or cel_errors(obj, defaulted(old) if old else None)


def spec_accepts(manifest: dict) -> bool:
    try:
        spec_mod.parse(manifest)
        return True
    except spec_mod.SpecError:
        return False


def test_crd_identity_and_printer_columns():
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1" and CRD["metadata"]["name"] == "compressionjobs.kondense.dev"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == \
        ("CompressionJob", "compressionjobs", "compressionjob", ["cpj"])
    assert VERSION["name"] == "v1alpha1" and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {"Phase": ".status.phase", "Stage": ".status.stage", "Delta": ".spec.delta",
                       "Size x": ".status.metrics.enhancement.size", "Acc drop": ".status.metrics.enhancement.accuracyDrop",
                       "Age": ".metadata.creationTimestamp"}


def test_schema_is_structural():
    """What apiextensions/v1 requires: a type on every node (int-or-string aside), no
    additionalProperties next to properties, no types inside oneOf/anyOf."""
    def walk(node: dict, where: str, in_junctor: bool = False) -> None:
        if in_junctor:
            assert not {"type", "properties", "default", "additionalProperties"} & set(node), where
            return
        assert "type" in node or node.get("x-kubernetes-int-or-string"), where
        assert not ("properties" in node and "additionalProperties" in node), where
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}.*")
        if "items" in node:
            walk(node["items"], f"{where}[]")
        for junctor in ("oneOf", "anyOf", "allOf"):
            for sub in node.get(junctor) or []:
                if not node.get("x-kubernetes-int-or-string"):
                    walk(sub, f"{where}/{junctor}", in_junctor=True)
    walk(SCHEMA, "")
    # every field kondense.job.spec knows is in the schema, and nothing else
    assert set(SCHEMA["properties"]["spec"]["properties"]) == set(spec_mod.SPEC_KEYS)
    assert set(SCHEMA["properties"]["spec"]["properties"]["budget"]["properties"]) == set(spec_mod.BUDGET_KEYS)
    status = SCHEMA["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed", "Suspended"]


def _examples() -> list[Path]:
    return sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_examples_that_kondense_accepts_pass_the_schema(path: Path):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "CompressionJob" and spec_accepts(doc):
            assert api_server_accepts(doc) == []


VALID = [
    cj_manifest("a", "ns"),
    cj_manifest("b", "ns", model={"zoo": "resnet18"}, data={"uri": "pvc://data/imgs", "format": "imagefolder"}),
    cj_manifest("c", "ns", data={"uri": "pvc://data/x.npz"}, delta=100, stage=1, workers=4, slotsPerWorker=8,
                backend="horovod", device="cuda", objective="macs", seed=3, suspend=True,
                budget={"stage1Epochs": 0.5, "stepEpochs": 1, "maxSteps": 2, "scanSamples": 10, "ratios": [0.25, 0.5],
                        "trainSamples": 100, "valSamples": 10, "testSamples": 10},
                resources={"limits": {"memory": "8Gi", "cpu": 4}, "requests": {"cpu": "500m"}}),
    cj_manifest("d", "ns", output={"uri": "file:///abs/out"}),
    cj_manifest("e", "ns", output={"uri": "relative/out"}),
]


@pytest.mark.parametrize("manifest", VALID, ids=lambda m: m["metadata"]["name"])
def test_valid_manifests_pass_both(manifest):
    assert spec_accepts(manifest)
    assert api_server_accepts(manifest) == []


INVALID = {
    "delta zero": {"delta": 0},
    "delta negative": {"delta": -1},
    "delta over 100": {"delta": 150},
    "delta a string": {"delta": "1"},
    "stage 3": {"stage": 3},
    "stage 0": {"stage": 0},
    "workers 0": {"workers": 0},
    "slots 0": {"slotsPerWorker": 0},
    "no model source": {"model": {"arch": "resnet18"}},
    "two model sources": {"model": {"zoo": "resnet18", "uri": "pvc://m/x.pt"}},
    "zoo with arch": {"model": {"zoo": "resnet18", "arch": "resnet18"}},
    "two data sources": {"data": {"dataset": "fashion-mnist", "uri": "pvc://d/x.npz"}},
    "no data source": {"data": {}},
    "dataset with format": {"data": {"dataset": "fashion-mnist", "format": "npz"}},
    "unknown backend": {"backend": "mpi"},
    "unknown device": {"device": "tpu"},
    "unknown objective": {"objective": "latency"},
    "unknown field": {"delat": 1},
    "unknown budget field": {"budget": {"epochs": 1}},
    "ratio of 1": {"budget": {"ratios": [1.0]}},
    "no ratios": {"budget": {"ratios": []}},
    "zero samples": {"budget": {"trainSamples": 0}},
    "negative seed": {"seed": -1},
    "suspend not a bool": {"suspend": "yes"},
    "s3 output": {"output": {"uri": "s3://bucket/out"}},
    "claim not a label": {"output": {"uri": "pvc://Models/out"}},
    "pvc without slashes": {"model": {"uri": "pvc:models/m.pt", "arch": "resnet18"}},
    "file with two slashes": {"output": {"uri": "file://out"}},
    "bad format": {"data": {"uri": "pvc://d/x", "format": "csv"}},
}


@pytest.mark.parametrize("change", INVALID.values(), ids=list(INVALID))
def test_the_schema_rejects_what_kondense_rejects(change):
    manifest = cj_manifest("bad", "ns")
    manifest["spec"].update(change)
    assert not spec_accepts(manifest), "kondense.job.spec should refuse this too"
    assert api_server_accepts(manifest) != []


def test_missing_required_fields():
    for key in ("model", "data", "delta", "output"):
        manifest = cj_manifest("m", "ns")
        del manifest["spec"][key]
        assert not spec_accepts(manifest) and api_server_accepts(manifest) != []


def test_spec_is_immutable_but_suspend():
    old = cj_manifest("a", "ns", budget={"trainSamples": 100})
    assert api_server_accepts(old, old) == []
    paused = copy.deepcopy(old)
    paused["spec"]["suspend"] = True
    assert api_server_accepts(paused, old) == []
    assert api_server_accepts(old, paused) == []
    for change, word in [({"delta": 3.0}, "spec.delta"), ({"workers": 4}, "spec.workers"), ({"stage": 1}, "spec.stage"),
                         ({"model": {"zoo": "resnet18"}}, "spec.model"), ({"output": {"uri": "pvc://x/y"}}, "spec.output"),
                         ({"budget": {"trainSamples": 200}}, "spec.budget"), ({"seed": 7}, "spec.seed"),
                         ({"resources": {"limits": {"cpu": 2}}}, "spec.resources"), ({"backend": "torch"}, "spec.backend")]:
        new = copy.deepcopy(old)
        new["spec"].update(change)
        if new["spec"] == old["spec"]:
            new["spec"]["backend"] = "horovod"
        errors = api_server_accepts(new, old)
        assert errors and word in " ".join(errors) and "immutable" in " ".join(errors), (change, errors)
    # a budget added or removed after creation counts as a change too
    no_budget = copy.deepcopy(old)
    del no_budget["spec"]["budget"]
    assert api_server_accepts(no_budget, old) != [] and api_server_accepts(old, no_budget) != []


def test_status_schema_accepts_what_the_operator_writes():
    from kondense_operator import status as st

    conds = st.set_condition([], "Created", True, "Created", "accepted", 1)
    status = {"phase": "Succeeded", "stage": 2, "startTime": st.now(), "completionTime": st.now(), "stageStartTime": st.now(),
              "observedGeneration": 1, "reason": "Succeeded", "message": "ok", "trainingSamples": 5, "conditions": conds,
              "metrics": {"original": {"accuracy": 1.0}, "enhancement": {"size": 2.0}},
              "artifacts": {"model": "pvc://m/out/model.pt"}}
    manifest = cj_manifest("a", "ns")
    manifest["status"] = status
    assert api_server_accepts(manifest) == []
    manifest["status"]["phase"] = "Done"
    assert api_server_accepts(manifest) != []
