"""The committed CRD, evaluated here on its own as the API server would, against kondense.job.spec.

`api_server_errors` is an independent emulation of what the API server does on create (and on
update, for the transition rules): nulls pruned, `default`s applied, the openAPIV3Schema checked
with jsonschema (OpenAPI 3.0 = draft 4 here: boolean exclusiveMinimum) with unknown fields
refused (kubectl's strict field validation), then the x-kubernetes-validations CEL rules under
cel-python with self (and oldSelf on updates). kondense.job.spec must give the same verdict on
every manifest below, except SEMANTIC_ONLY: what no schema can say."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from kondense.job import schema as schema_mod
from kondense.job import spec as spec_mod

from .conftest import CRD_PATH, REPO, cj_manifest

CRD = yaml.safe_load(CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    return [strict(v) for v in schema] if isinstance(schema, list) else schema


VALIDATOR = jsonschema.Draft4Validator(strict(SCHEMA))
_CEL = celpy.Environment()


def prepared(obj: Any, schema: dict = SCHEMA) -> Any:
    """Nulls pruned, then defaults applied, as the API server does before validating."""
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if v is not None}
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = prepared(obj[key], sub)
    return obj


def cel_errors(new: Any, old: Any, schema: dict, path: str = "") -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"] and old is None:
            continue  # a transition rule: updates only
        activation = {"self": celpy.json_to_cel(new)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        if not bool(_CEL.program(_CEL.compile(rule["rule"])).evaluate(activation)):
            errors.append(f"{path}: {rule['message']}")
    if isinstance(new, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in new:
                errors += cel_errors(new[key], old.get(key) if isinstance(old, dict) else None, sub, f"{path}.{key}")
    return errors


def api_server_errors(manifest: dict, old: dict | None = None) -> list[str]:
    """Every reason the API server would refuse `manifest` ([] = accepted)."""
    obj = prepared(manifest)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in VALIDATOR.iter_errors(obj)]
    return errors or cel_errors(obj, prepared(old) if old else None, SCHEMA)


def kondense_accepts(manifest: dict) -> bool:
    """The operator's verdict (the API server's counterpart); `kondense run` skips the Kubernetes-only rules."""
    try:
        spec_mod.parse_for_kubernetes(manifest)
        return True
    except spec_mod.SpecError:
        return False


def with_spec(**change: Any) -> dict:
    manifest = cj_manifest("job", "ns")
    manifest["spec"].update(change)
    return manifest


FULL = {
    "model": {"zoo": "resnet18"},
    "data": {"uri": "pvc://data/x.npz", "format": "npz"},
    "delta": 100,
    "stage": 1,
    "workers": 4,
    "slotsPerWorker": 8,
    "backend": "horovod",
    "device": "cuda",
    "objective": "macs",
    "seed": 3,
    "suspend": True,
    "resources": {"limits": {"memory": "8Gi", "cpu": 4}, "requests": {"cpu": "500m", "example.com/x": "1e3"}},
    "budget": {
        "stage1Epochs": 0.5,
        "stepEpochs": 1,
        "maxSteps": 2,
        "scanSamples": 10,
        "ratios": [0.25, 0.5],
        "trainSamples": 100,
        "valSamples": 10,
        "testSamples": 10,
    },
}

# The shared table: (spec change, accepted?). "drift:" marks what kondense and the CRD used to disagree on.
CASES = {
    "defaults only": ({}, True),
    "every field": (FULL, True),
    "imagefolder data": ({"data": {"uri": "pvc://data/imgs", "format": "imagefolder"}}, True),
    "npz inferred": ({"data": {"uri": "/d/x.npz"}}, True),
    "file output, on Kubernetes": ({"output": {"uri": "file:///abs/out"}}, False),
    "relative output, on Kubernetes": ({"output": {"uri": "relative/out"}}, False),
    "a claim alone": ({"output": {"uri": "pvc://models"}}, True),
    "three dots are a name": ({"output": {"uri": "pvc://models/.../x"}}, True),
    "63-character claim": ({"output": {"uri": f"pvc://{'a' * 63}/x"}}, True),
    "64 ratios": ({"budget": {"ratios": [0.5] * 64}}, True),
    "253-character zoo name": ({"model": {"zoo": "r" * 253}}, True),
    "1024-character uri": ({"output": {"uri": "pvc://o/" + "o" * 1016}}, True),
    "null means default": ({"stage": None, "seed": None}, True),
    "delta zero": ({"delta": 0}, False),
    "delta over 100": ({"delta": 150}, False),
    "delta a string": ({"delta": "1"}, False),
    "delta null": ({"delta": None}, False),
    "stage 3": ({"stage": 3}, True),
    "stage 3, int8": ({"stage": 3, "quantize": "int8"}, True),
    "stage 3, quantize none": ({"stage": 3, "quantize": "none"}, False),
    "stage 2, quantize none": ({"stage": 2, "quantize": "none"}, True),
    "stage 1, int8": ({"stage": 1, "quantize": "int8"}, True),
    "stage 4": ({"stage": 4}, False),
    "stage 2.0": ({"stage": 2.0}, False),
    "workers 0": ({"workers": 0}, False),
    "slots a bool": ({"slotsPerWorker": True}, False),
    "no model source": ({"model": {"arch": "resnet18"}}, False),
    "two model sources": ({"model": {"zoo": "resnet18", "uri": "pvc://m/x.pt"}}, False),
    "zoo with arch": ({"model": {"zoo": "resnet18", "arch": "resnet18"}}, False),
    "two data sources": ({"data": {"dataset": "fashion-mnist", "uri": "pvc://d/x.npz"}}, False),
    "dataset with format": ({"data": {"dataset": "fashion-mnist", "format": "npz"}}, False),
    "backend mpi": ({"backend": "mpi"}, True),
    "unknown backend": ({"backend": "nccl"}, False),
    "unknown field": ({"delat": 1}, False),
    "unknown budget field": ({"budget": {"epochs": 1}}, False),
    "ratio of 1": ({"budget": {"ratios": [1.0]}}, False),
    "no ratios": ({"budget": {"ratios": []}}, False),
    "negative seed": ({"seed": -1}, False),
    "suspend a string": ({"suspend": "yes"}, False),
    "s3 output": ({"output": {"uri": "s3://bucket/out"}}, False),
    "claim not a label": ({"output": {"uri": "pvc://Models/out"}}, False),
    "pvc without slashes": ({"output": {"uri": "pvc:models/out"}}, False),
    "file with two slashes": ({"output": {"uri": "file://out"}}, False),
    "bad format": ({"data": {"uri": "pvc://d/x", "format": "csv"}}, False),
    "drift: unknown key under resources": ({"resources": {"limit": {"cpu": 1}}}, False),
    "drift: quantity a float": ({"resources": {"limits": {"cpu": 0.5}}}, False),
    "drift: quantity not a quantity": ({"resources": {"requests": {"memory": "8 GB"}}}, False),
    "drift: 65 ratios": ({"budget": {"ratios": [0.5] * 65}}, False),
    "drift: uri over 1024": ({"output": {"uri": "pvc://o/" + "o" * 1017}}, False),
    "drift: zoo name over 253": ({"model": {"zoo": "r" * 254}}, False),
    "drift: claim over 63": ({"output": {"uri": f"pvc://{'a' * 64}/x"}}, False),
    "drift: '..' in a pvc path": ({"output": {"uri": "pvc://models/a/../../etc"}}, False),
    "drift: '..' escaped": ({"output": {"uri": "pvc://models/a/%2E%2e/b"}}, False),
    "drift: '..' behind an escaped slash": ({"output": {"uri": "pvc://models/a%2F.."}}, False),
    "drift: npz format, no .npz": ({"data": {"uri": "pvc://d/imgs", "format": "npz"}}, False),
    "drift: imagefolder format, .npz": ({"data": {"uri": "pvc://d/x.npz", "format": "imagefolder"}}, False),
    "drift: blank zoo": ({"model": {"zoo": "  "}}, False),
    "drift: blank arch": ({"model": {"uri": "pvc://m/x.pt", "arch": "\t"}}, False),
    "drift: blank dataset": ({"data": {"dataset": " "}}, False),
    "drift: blank uri": ({"output": {"uri": " \n"}}, False),
    "restart settings": ({"maxRestarts": 0, "restartOnOOMKilled": True, "activeDeadlineSeconds": 1}, True),
    "100 restarts": ({"maxRestarts": 100}, True),
    "101 restarts": ({"maxRestarts": 101}, False),
    "negative restarts": ({"maxRestarts": -1}, False),
    "deadline 0": ({"activeDeadlineSeconds": 0}, False),
    "OOM restart a string": ({"restartOnOOMKilled": "true"}, False),
    "managed by kueue": ({"managedBy": "kueue.x-k8s.io"}, True),
    "managed by kueue, suspended": ({"managedBy": "kueue.x-k8s.io", "suspend": True}, False),
    "managed by the operator, suspended": ({"managedBy": "kondense.dev/operator", "suspend": True}, True),
    "managed by someone else": ({"managedBy": "example.com/mine"}, False),
}

# What kondense.job.spec refuses though no schema can say it (documented in kondense.job.schema):
# numbers JSON has not, which YAML can write but kubectl cannot send.
SEMANTIC_ONLY = {
    "delta NaN": {"delta": float("nan")},
    "infinite epochs": {"budget": {"stepEpochs": float("inf")}},
}


@pytest.mark.parametrize("change,accepted", CASES.values(), ids=list(CASES))
def test_kondense_and_the_api_server_agree(change, accepted):
    manifest = with_spec(**change)
    assert kondense_accepts(manifest) is accepted
    assert (api_server_errors(manifest) == []) is accepted, api_server_errors(manifest)


@pytest.mark.parametrize("change", SEMANTIC_ONLY.values(), ids=list(SEMANTIC_ONLY))
def test_semantic_refusals(change):
    manifest = with_spec(**change)
    assert not kondense_accepts(manifest) and api_server_errors(manifest) == []


ODD = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    3,
    1.5,
    0.5,
    100,
    100.5,
    2**40,
    float("nan"),
    float("inf"),
    "",
    " ",
    "x",
    "1",
    "500m",
    "8Gi",
    "1e3",
    "torch",
    "cuda",
    "macs",
    "npz",
    "imagefolder",
    "r" * 254,
    "o" * 1025,
    "pvc://m/x.npz",
    "pvc://m/../x",
    "pvc://m/%2e%2E/x",
    "pvc://Bad/x",
    "pvc:m/x",
    "file://h/x",
    "file:///x",
    "s3://b/x",
    "rel/x.npz",
    [],
    [0.5],
    [0.5, 1.0],
    [0.5] * 65,
    {},
    {"zoo": "r"},
    {"uri": "pvc://m/x"},
    {"cpu": 1},
    {"a": {"b": 1}},
]


def value_paths(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    out = [(path, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            out += value_paths(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += value_paths(item, path + (i,))
    return out


def mutate(spec: dict, rng: random.Random) -> dict:
    """1 to 3 of: a key dropped, renamed or added, a value replaced by an odd one (or one of its
    own type), a number nudged."""
    spec = copy.deepcopy(spec)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = value_paths(spec)[1:]
        strings = [p for p, v in paths if isinstance(v, str)]  # where the CEL rules are: a third of the time
        path = rng.choice(strings) if strings and rng.random() < 0.3 else rng.choice(paths)[0]
        parent = spec
        for step in path[:-1]:
            parent = parent[step]
        key, kind = path[-1], rng.choice(["drop", "rename", "add", "odd", "same", "same", "same", "nudge"])
        if kind == "drop" and isinstance(parent, dict):
            del parent[key]
        elif kind == "rename" and isinstance(parent, dict):
            parent[rng.choice([key.lower(), key + "s", key[:-1], key.capitalize()])] = parent.pop(key)
        elif kind == "add" and isinstance(parent, dict):
            parent[rng.choice(["extra", "zoo", "uri", "format", "arch", "cpu", "requests"])] = rng.choice(ODD)
        elif kind == "nudge" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = rng.choice([parent[key] + 1, -parent[key], parent[key] * 1000, parent[key] / 3, 0])
        elif kind == "same":
            parent[key] = copy.deepcopy(rng.choice([v for v in ODD if type(v) is type(parent[key])] or ODD))
        else:
            parent[key] = copy.deepcopy(rng.choice(ODD))
    return spec


def test_generated_manifests_get_the_same_verdict():
    rng = random.Random(20261128)
    verdicts = []
    for i in range(300):
        manifest = cj_manifest("job", "ns")
        base = (
            FULL
            if i % 2
            else {**FULL, "model": {"uri": "pvc://m/m.pt", "arch": "r"}, "data": {"uri": "/d", "format": "imagefolder"}}
        )
        manifest["spec"] = mutate({**manifest["spec"], **copy.deepcopy(base)}, rng)
        ours, theirs = kondense_accepts(manifest), api_server_errors(manifest) == []
        if any(
            isinstance(v, float) and not math.isfinite(v) for _, v in value_paths(manifest["spec"])
        ):  # SEMANTIC_ONLY
            assert not ours, (i, manifest["spec"])
        else:
            assert ours is theirs, (i, manifest["spec"], api_server_errors(manifest))
        verdicts.append(ours)
    assert 60 <= sum(verdicts) <= 240, "the mutations should give both verdicts plenty"


def test_examples_validate():
    jobs = [
        d
        for p in sorted((REPO / "examples").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d and d.get("kind") == "CompressionJob"
    ]
    assert len(jobs) >= 5
    for doc in jobs:
        assert spec_mod.parse(doc).name == doc["metadata"]["name"]
        if doc["metadata"]["name"] == "mobilenet-v1-fmnist-local":  # examples/local-stage2.yaml, for `kondense run`
            assert [e for e in api_server_errors(doc) if "on Kubernetes" in e], "its output is a local path"
        else:
            assert api_server_errors(doc) == [] and spec_mod.parse_for_kubernetes(doc) == spec_mod.parse(doc)


def test_the_copies_are_the_package_crd():
    source = schema_mod.CRD_FILE.read_text()
    assert schema_mod.CRD_FILE.parent == Path(spec_mod.__file__).parent
    for copy_ in (REPO / "crds" / "compressionjob.yaml", REPO / "charts" / "kondense" / "files" / "crd.yaml"):
        assert copy_.read_text() == source, f"{copy_} differs from {schema_mod.CRD_FILE}: run `make sync-crd`"
    # deploy/ is the chart rendered by scripts/render-deploy.sh: the chart's template writes the
    # spec out as the source's text, and only adds labels and an annotation to the metadata
    deployed = (REPO / "deploy" / "compressionjob-crd.yaml").read_text()
    spec_text = source[source.index("\nspec:\n") :]
    assert spec_text.rstrip("\n") in deployed, "run `make deploy-manifests`"
    assert yaml.safe_load(deployed)["spec"] == yaml.safe_load(source)["spec"], "run `make deploy-manifests`"


def test_crd_identity_and_printer_columns():
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1" and CRD["metadata"]["name"] == "compressionjobs.kondense.dev"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == (
        "CompressionJob",
        "compressionjobs",
        "compressionjob",
        ["cpj"],
    )
    assert (VERSION["name"], VERSION["served"], VERSION["storage"]) == ("v1alpha1", True, True)
    assert VERSION["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Stage": ".status.stage",
        "Progress": ".status.progress.percent",
        "Delta": ".spec.delta",
        "Size x": ".status.metrics.enhancement.size",
        "Acc drop": ".status.metrics.enhancement.accuracyDrop",
        "Restarts": ".status.restarts",
        "Age": ".metadata.creationTimestamp",
    }
    extra = {c["name"]: (c["type"], c.get("priority", 0)) for c in VERSION["additionalPrinterColumns"]}
    assert (extra["Progress"], extra["Restarts"]) == (("integer", 0), ("integer", 1)), "Restarts only with -o wide"


def test_schema_is_structural():
    """What apiextensions/v1 requires: a type on every node (int-or-string aside), no
    additionalProperties next to properties, no types inside oneOf/anyOf."""

    def walk(node: dict, where: str, in_junctor: bool = False) -> None:
        if in_junctor:
            assert not {"type", "properties", "default", "additionalProperties", "description"} & set(node), where
            return
        assert "type" in node or node.get("x-kubernetes-int-or-string"), where
        assert not ("properties" in node and "additionalProperties" in node), where
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.{key}")
        for sub in [node.get("additionalProperties"), node.get("items")]:
            if isinstance(sub, dict):
                walk(sub, f"{where}[]")
        for junctor in ("oneOf", "anyOf", "allOf"):
            for sub in node.get(junctor) or []:
                if not node.get("x-kubernetes-int-or-string"):
                    walk(sub, f"{where}/{junctor}", in_junctor=True)

    walk(SCHEMA, "")
    for rule in _rules(SCHEMA):  # what a rule may say; fieldPath as the API server parses it
        assert set(rule) <= {"rule", "message", "fieldPath"} and rule["message"], rule
        assert rule.get("fieldPath", ".x").startswith(".")
        _CEL.compile(rule["rule"])


def _rules(node: Any) -> list[dict]:
    if isinstance(node, dict):
        return list(node.get("x-kubernetes-validations") or []) + [r for v in node.values() for r in _rules(v)]
    return [r for v in node for r in _rules(v)] if isinstance(node, list) else []


def test_spec_is_immutable_but_suspend():
    old = with_spec(budget={"trainSamples": 100})
    paused = copy.deepcopy(old)
    paused["spec"]["suspend"] = True
    assert api_server_errors(old, old) == api_server_errors(paused, old) == api_server_errors(old, paused) == []
    for change, word in [
        ({"delta": 3.0}, "spec.delta"),
        ({"workers": 4}, "spec.workers"),
        ({"stage": 1}, "spec.stage"),
        ({"model": {"zoo": "resnet18"}}, "spec.model"),
        ({"output": {"uri": "pvc://x/y"}}, "spec.output"),
        ({"budget": {"trainSamples": 200}}, "spec.budget"),
        ({"seed": 7}, "spec.seed"),
        ({"resources": {"limits": {"cpu": 2}}}, "spec.resources"),
        ({"backend": "horovod"}, "spec.backend"),
        ({"quantize": "int8"}, "spec.quantize"),
        ({"latency": {"runtime": "onnxruntime"}}, "spec.latency"),
        ({"latency": {"batch": 32}}, "spec.latency"),
        ({"budget": None}, "spec.budget"),
        ({"managedBy": "kueue.x-k8s.io"}, "spec.managedBy"),
    ]:
        new = copy.deepcopy(old)
        new["spec"].update(change)
        errors = " ".join(api_server_errors(new, old))
        assert word in errors and "immutable" in errors, (change, errors)
        assert kondense_accepts(new), "transition rules only apply to updates"
    for change in ({"maxRestarts": 10}, {"restartOnOOMKilled": True}, {"activeDeadlineSeconds": 60}):
        new = copy.deepcopy(old)
        new["spec"].update(change)
        assert api_server_errors(new, old) == [], f"{change} is read afresh for each stage Job, so it may change"


def test_status_schema_accepts_what_the_operator_writes():
    from kondense.job import status as st

    conds = st.set_condition([], "Created", True, "Created", "accepted", 1)
    status = {
        "phase": "Succeeded",
        "stage": 2,
        "startTime": st.now(),
        "completionTime": st.now(),
        "stageStartTime": st.now(),
        "observedGeneration": 1,
        "reason": "Succeeded",
        "message": "ok",
        "trainingSamples": 5,
        "restarts": 1,
        "progress": {
            "stage": 2,
            "step": 3,
            "steps": 10,
            "percent": 30,
            "etaSeconds": 120,
            "valAccuracy": 0.91,
            "compression": 2.5,
            "updateTime": st.now(),
            "message": "annealing step 3 of 10",
        },
        "conditions": conds,
        "metrics": {"original": {"accuracy": 1.0}, "enhancement": {"size": 2.0}},
        "artifacts": {"model": "pvc://m/out/model.pt"},
    }
    manifest = with_spec()
    manifest["status"] = status
    assert api_server_errors(manifest) == [] and kondense_accepts(manifest)
    manifest["status"]["phase"] = "Done"
    assert api_server_errors(manifest) != []
    manifest["status"]["phase"] = "Running"
    for bad in ({"restarts": -1}, {"progress": {"percent": 101}}, {"progress": {"step": "3"}}):
        assert api_server_errors({**manifest, "status": {**status, **bad}}) != [], bad
    assert kondense_accepts(manifest), "the API server ignores status on create; so does parse"
