"""The CRD refuses up front what the operator would refuse later.

Two judges see every case: the API server (kondense.job.schema.validate: the CRD's schema and
its CEL rules, Kubernetes-only ones included) and the operator (kondense.job.spec.
parse_for_kubernetes, what it runs on every object it is handed, whenever that object was
admitted). They must agree on every manifest: the operator never fails a job the API server
admitted (the refusal belongs up front, at `kubectl apply`), and it refuses, with the same clear
message, whatever an older, laxer CRD let in. The cases: valid manifests of every kind, each
broken in each of the ways Kubernetes refuses (expected verdict known: refused, and where), and
seeded random mutations among interesting values (verdict unknown: the judges must agree).
`kondense run` (one machine) skips only the rules marked Kubernetes-only.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from kondense.job import schema
from kondense.job import spec as S
from tests.operator.test_crd_schema import value_paths

SEED = 20261129


def manifest(**spec: Any) -> dict:
    base = {
        "model": {"zoo": "resnet18"},
        "data": {"dataset": "fashion-mnist"},
        "delta": 1.0,
        "output": {"uri": "pvc://models/out/job"},
    }
    base.update(spec)
    return {"apiVersion": S.API_VERSION, "kind": S.KIND, "metadata": {"name": "job", "namespace": "ns"}, "spec": base}


# one of each kind of job the operator runs
VALID = {
    "zoo": manifest(),
    "torchvision, published weights": manifest(
        model={"torchvision": "resnet50", "pretrained": "IMAGENET1K_V2"},
        data={"uri": "pvc://data/imgs/", "inputSize": [224, 224], "augment": "resized-crop-flip"},
    ),
    "factory from a claim": manifest(
        model={
            "factory": "mine.nets:build",
            "codeUri": "pvc://code/src",
            "uri": "pvc://models/w.pt",
            "kwargs": {"k": 3},
        },
        data={"uri": "pvc://data/train.npz", "format": "npz", "normalize": {"mean": [0.5], "std": [0.25]}},
    ),
    "weights file": manifest(
        model={"uri": "pvc://models/m.pt", "arch": "vgg19"},
        stage=3,
        objective="latency",
        latency={"runtime": "onnxruntime", "batch": 4096},
    ),
    "gpus, resources": manifest(
        workers=4,
        slotsPerWorker=8,
        device="cuda",
        backend="horovod",
        resources={
            "requests": {"cpu": "500m", "memory": "8Gi", "ephemeral-storage": "1G"},
            "limits": {"cpu": 4, "memory": "16Gi", "nvidia.com/gpu": "8", "hugepages-2Mi": "1Gi"},
        },
    ),
    "mpi, restarts": manifest(
        backend="mpi", maxRestarts=10, restartOnOOMKilled=True, activeDeadlineSeconds=86400, suspend=True
    ),
    "kueue, bounds": manifest(
        managedBy="kueue.x-k8s.io",
        workers=256,
        slotsPerWorker=16,
        maxRestarts=100,
        budget={"ratios": [0.5] * 64, "maxSteps": 1},
    ),
}

# (what breaks, spec path, value, the field the refusal names): each refused on Kubernetes
BREAKS = [
    ("output a local path", ("output", "uri"), "/abs/out", "spec.output.uri"),
    ("output relative", ("output", "uri"), "out/x", "spec.output.uri"),
    ("output file://", ("output", "uri"), "file:///out", "spec.output.uri"),
    ("output s3://", ("output", "uri"), "s3://bucket/out", "spec.output.uri"),
    ("claim not a label", ("output", "uri"), "pvc://Models/out", "spec.output.uri"),
    ("claim over 63", ("output", "uri"), f"pvc://{'a' * 64}/x", "spec.output.uri"),
    ("claim with a dot", ("output", "uri"), "pvc://a.b/x", "spec.output.uri"),
    ("'..' leaves the claim", ("output", "uri"), "pvc://models/a/../../etc", "spec.output.uri"),
    ("'..' escaped", ("output", "uri"), "pvc://models/%2e%2E/x", "spec.output.uri"),
    ("'..' behind an escaped slash", ("output", "uri"), "pvc://models/a%2F..", "spec.output.uri"),
    ("blank output", ("output", "uri"), " \t", "spec.output.uri"),
    ("empty output", ("output", "uri"), "", "spec.output.uri"),
    ("blank zoo", ("model", "zoo"), "  ", "spec.model.zoo"),
    ("blank dataset", ("data", "dataset"), "\n", "spec.data.dataset"),
    ("blank data uri", ("data", "uri"), " ", "spec.data.uri"),
    ("blank model uri", ("model", "uri"), " ", "spec.model.uri"),
    ("blank arch", ("model", "arch"), " ", "spec.model.arch"),
    ("blank codeUri", ("model", "codeUri"), " ", "spec.model.codeUri"),
    ("blank pretrained", ("model", "pretrained"), " ", "spec.model.pretrained"),
    ("pretrained with a space", ("model", "pretrained"), "IMAGENET1K V1", "spec.model.pretrained"),
    ("blank factory", ("model", "factory"), " ", "spec.model.factory"),
    ("workers 0", ("workers",), 0, "spec.workers"),
    ("workers 257", ("workers",), 257, "spec.workers"),
    ("slots 0", ("slotsPerWorker",), 0, "spec.slotsPerWorker"),
    ("slots 17", ("slotsPerWorker",), 17, "spec.slotsPerWorker"),
    ("negative restarts", ("maxRestarts",), -1, "spec.maxRestarts"),
    ("101 restarts", ("maxRestarts",), 101, "spec.maxRestarts"),
    ("deadline 0", ("activeDeadlineSeconds",), 0, "spec.activeDeadlineSeconds"),
    ("deadline a string", ("activeDeadlineSeconds",), "1h", "spec.activeDeadlineSeconds"),
    ("managedBy unknown", ("managedBy",), "kueue", "spec.managedBy"),
    ("latency runtime unknown", ("latency", "runtime"), "tensorrt", "spec.latency.runtime"),
    ("latency batch 0", ("latency", "batch"), 0, "spec.latency.batch"),
    ("latency batch 5000", ("latency", "batch"), 5000, "spec.latency.batch"),
    ("negative cpu", ("resources", "requests", "cpu"), -1, "spec.resources.requests.cpu"),
    ("negative memory", ("resources", "limits", "memory"), "-8Gi", "spec.resources.limits.memory"),
    ("not a quantity", ("resources", "requests", "memory"), "8 GB", "spec.resources.requests.memory"),
    ("fractional integer quantity", ("resources", "limits", "cpu"), 0.5, "spec.resources.limits.cpu"),
    ("blank quantity", ("resources", "limits", "cpu"), " ", "spec.resources.limits.cpu"),
    ("quantity over 64", ("resources", "limits", "cpu"), "1" * 65, "spec.resources.limits.cpu"),
    ("resource without a domain", ("resources", "limits", "gpu"), 1, "spec.resources.limits"),
    ("resource 'requests.'", ("resources", "requests", "requests.nvidia.com/gpu"), 1, "spec.resources.requests"),
    ("resource uppercase domain", ("resources", "limits", "Nvidia.com/gpu"), 1, "spec.resources.limits"),
    ("resource name over 63", ("resources", "limits", "example.com/" + "g" * 64), 1, "spec.resources.limits"),
    ("resource domain over 253", ("resources", "limits", "a" * 254 + "/g"), 1, "spec.resources.limits"),
    ("hugepages without a size", ("resources", "limits", "hugepages-"), "1Gi", "spec.resources.limits"),
    ("half a GPU", ("resources", "limits", "nvidia.com/gpu"), "0.5", "spec.resources.limits"),
    ("GPUs in milli", ("resources", "requests", "example.com/fpga"), "500m", "spec.resources.requests"),
]


def _set(spec: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        spec = spec.setdefault(key, {})
    spec[path[-1]] = value


def broken(base: dict, path: tuple, value: Any) -> dict:
    m = copy.deepcopy(base)
    _set(m["spec"], path, value)
    return m


def _fits(base: dict, path: tuple) -> bool:
    """Whether breaking `path` in `base` breaks only it: a model or data field only where the base
    has that kind of source (a blank zoo in a torchvision model would be refused as a second source
    first)."""
    spec = base["spec"]
    if path == ("data", "uri") and "format" in spec["data"]:
        return False  # a blank uri contradicts the format first, and is refused for that
    if path[0] in ("model", "data") and len(path) == 2:
        return path[1] in spec[path[0]]
    return True


def verdict_api_server(m: dict) -> str | None:
    try:
        schema.validate({k: v for k, v in m.items() if k != "status"})
        return None
    except schema.SpecError as e:
        return str(e)


def verdict_operator(m: dict) -> str | None:
    try:
        S.parse_for_kubernetes(m)
        return None
    except S.SpecError as e:
        return str(e)


CASES = [
    (f"{name}: {what}", broken(base, path, value), field)
    for name, base in VALID.items()
    for what, path, value, field in BREAKS
    if _fits(base, path)
]


@pytest.mark.parametrize("name", list(VALID))
def test_valid_manifests_pass_both(name):
    assert verdict_api_server(VALID[name]) is None and verdict_operator(VALID[name]) is None
    assert S.parse_for_kubernetes(VALID[name]) == S.parse(VALID[name])


def test_every_break_is_refused_by_both_alike():
    assert len(CASES) >= 200, len(CASES)
    for label, m, field in CASES:
        server, operator = verdict_api_server(m), verdict_operator(m)
        assert server is not None, f"{label}: the API server would admit it"
        # the operator's message for an object admitted under an older CRD: the same, naming the field
        assert operator == server, label
        assert operator.startswith(f"{field}: "), (label, operator)


def test_every_way_of_breaking_is_tried():
    tried = {label.split(": ", 1)[1] for label, _, _ in CASES}
    assert tried == {what for what, _, _, _ in BREAKS}


# values that sit on a bound, cross a rule or change a type
INTERESTING = [
    None,
    True,
    False,
    0,
    -1,
    1,
    3,
    16,
    17,
    100,
    101,
    256,
    257,
    0.5,
    1.5,
    2**40,
    "",
    " ",
    "\t",
    "x",
    "1",
    "-1",
    "500m",
    "8Gi",
    "-8Gi",
    "1e3",
    "0.5",
    "8 GB",
    "DEFAULT",
    "IMAGENET1K V1",
    "kueue.x-k8s.io",
    "kondense.dev/operator",
    "torch",
    "mpi",
    "cuda",
    "npz",
    "pvc://m/x",
    "pvc://m/x.npz",
    "pvc://m/../x",
    "pvc://m/%2e%2e",
    "pvc://Bad/x",
    "file:///x",
    "rel/x",
    "/abs/x",
    "s3://b/x",
    [],
    [0.5],
    [224],
    {},
    {"cpu": 1},
    {"gpu": 1},
    {"nvidia.com/gpu": "0.5"},
    {"nvidia.com/gpu": 2},
    {"uri": "pvc://m/x"},
]
# keys a mutation may add where there are none yet
NEW_KEYS = [
    "cpu",
    "memory",
    "gpu",
    "nvidia.com/gpu",
    "hugepages-2Mi",
    "uri",
    "arch",
    "maxRestarts",
    "activeDeadlineSeconds",
    "managedBy",
    "suspend",
    "restartOnOOMKilled",
    "requests",
    "limits",
]


def mutate(m: dict, rng: random.Random) -> dict:
    m = copy.deepcopy(m)
    for _ in range(rng.choice([1, 1, 1, 2])):
        path = rng.choice([p for p, _ in value_paths(m["spec"])][1:])
        parent = m["spec"]
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and rng.random() < 0.25:
            parent[rng.choice(NEW_KEYS)] = copy.deepcopy(rng.choice(INTERESTING))
        elif isinstance(parent, dict) and rng.random() < 0.1:
            del parent[path[-1]]
        else:  # half the time a value of the same type: the bounds and rules, not the types, are the point
            old = parent[path[-1]]
            same = [v for v in INTERESTING if type(v) is type(old)]
            parent[path[-1]] = copy.deepcopy(rng.choice(same if same and rng.random() < 0.5 else INTERESTING))
    return m


def test_random_mutations_get_the_same_verdict():
    rng = random.Random(SEED)
    bases = list(VALID.values())
    verdicts = []
    for i in range(400):
        m = mutate(bases[i % len(bases)], rng)
        server, operator = verdict_api_server(m), verdict_operator(m)
        assert operator == server, (i, m["spec"])
        verdicts.append(server is None)
    assert 40 <= sum(verdicts) <= 360, f"{sum(verdicts)} of 400 accepted: the mutations should give both verdicts"


def test_local_runs_skip_only_the_kubernetes_only_rules():
    """`kondense run` writes where it is told; everything else it refuses as Kubernetes does."""
    marked = [r for r in _rules(schema.root_schema()) if schema.is_kubernetes_only(r)]
    assert [r["rule"] for r in marked] == ["self.uri.startsWith('pvc://')"]
    local_outputs = set()
    for label, m, _ in CASES:
        local = None
        try:
            S.parse(m)
        except S.SpecError as e:
            local = str(e)
        operator = verdict_operator(m)
        if operator.startswith(f"spec.output.uri: {schema.KUBERNETES_ONLY}"):
            # locally the output is judged as a URI only: accepted, or refused for what it is
            assert local is None or local.startswith("spec.output.uri: "), (label, local)
            if local is None:
                local_outputs.add(m["spec"]["output"]["uri"])
        else:
            assert local == operator, label
    assert local_outputs == {"/abs/out", "out/x", "file:///out"}


def _rules(node: Any) -> list[dict]:
    if isinstance(node, dict):
        return list(node.get("x-kubernetes-validations") or []) + [r for v in node.values() for r in _rules(v)]
    return [r for v in node for r in _rules(v)] if isinstance(node, list) else []
