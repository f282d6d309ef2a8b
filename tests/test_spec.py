"""The CompressionJob manifest: parsing, defaults, round trips, every rejection, URIs, the engine's arguments."""
from __future__ import annotations

import copy
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kondense.job import spec as S
from kondense.errors import KondenseError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "local-stage2.yaml"
DESIGN = REPO.parent / "shared" / "DESIGN.md"

# DESIGN.md's manifest ("The user's view"), status included: the operator writes status, parse ignores it
DESIGN_MANIFEST = """
apiVersion: kondense.dev/v1alpha1
kind: CompressionJob
metadata: {name: resnet18-fmnist}
spec:
  model: {zoo: resnet18}
  data: {dataset: fashion-mnist}
  delta: 1.0
  stage: 2
  workers: 2
  slotsPerWorker: 4
  backend: horovod
  output: {uri: pvc://models/out/}
status:
  phase: Succeeded
  stage: 2
  conditions: [...]
  metrics:
    original: {accuracy: 93.1, sizeMB: 42.8}
    stage1:   {...}
"""


def minimal() -> dict:
    return {"apiVersion": S.API_VERSION, "kind": S.KIND, "metadata": {"name": "job"},
            "spec": {"model": {"zoo": "resnet18"}, "data": {"dataset": "fashion-mnist"}, "delta": 1.0,
                     "output": {"uri": "pvc://models/out/"}}}


def full() -> dict:
    m = minimal()
    m["metadata"]["namespace"] = "team-a"
    m["spec"].update({"model": {"uri": "pvc://models/m.pt", "arch": "vgg19"}, "data": {"uri": "pvc://data/train.npz"},
                      "stage": 1, "workers": 3, "slotsPerWorker": 2, "backend": "torch", "device": "cuda",
                      "objective": "macs", "suspend": True, "seed": 7,
                      "budget": {"stage1Epochs": 0.5, "stepEpochs": 2, "maxSteps": 3, "scanSamples": 500,
                                 "ratios": [0.5, 0.25], "trainSamples": 1000, "valSamples": 200, "testSamples": None},
                      "resources": {"limits": {"nvidia.com/gpu": 2}}})
    return m


def rejects(manifest: dict, field: str, *words: str) -> S.SpecError:
    with pytest.raises(S.SpecError) as info:
        S.parse(manifest)
    err = info.value
    assert err.field == field, f"expected field {field!r}, got {err.field!r}: {err}"
    assert field in str(err)
    for word in words:
        assert word in str(err), f"{word!r} not in {str(err)!r}"
    return err


_DELETE = object()  # with_spec(key=_DELETE) removes the key


def with_spec(**changes) -> dict:
    m = minimal()
    for key, value in changes.items():
        if value is _DELETE:
            del m["spec"][key]
        else:
            m["spec"][key] = value
    return m


# --------------------------------------------------------------------------------------------- accepted


def test_example_parses():
    job = S.load(EXAMPLE)
    s = job.spec
    assert (job.name, job.namespace) == ("mobilenet-v1-fmnist-local", "default")
    assert s.model == S.ModelSource(zoo="mobilenet_v1")
    assert s.data == S.DataSource(dataset="fashion-mnist")
    assert (s.delta, s.stage, s.workers, s.slots_per_worker, s.backend, s.device) == (2.0, 2, 2, 1, "torch", "cpu")
    assert s.budget == S.BudgetSpec(stage1_epochs=1.0, max_steps=1, scan_samples=200, ratios=(0.5,),
                                    train_samples=1024, val_samples=300, test_samples=300)
    # relative to the manifest's directory, not to the cwd
    assert Path(s.output_uri) == REPO / "out" / "local-stage2"
    assert "kondense zoo train mobilenet_v1 --dataset fashion-mnist" in EXAMPLE.read_text()


def test_example_parses_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(S.load(EXAMPLE).spec.output_uri) == REPO / "out" / "local-stage2"


def test_design_manifest_parses():
    job = S.parse(yaml.safe_load(DESIGN_MANIFEST))
    assert job.name == "resnet18-fmnist"
    assert (job.spec.workers, job.spec.slots_per_worker, job.spec.backend) == (2, 4, "horovod")
    assert job.spec.output_uri == "pvc://models/out/"


@pytest.mark.skipif(not DESIGN.exists(), reason="DESIGN.md lives outside the repository")
def test_design_md_itself_parses():
    text = DESIGN.read_text()
    block = re.search(r"## The user's view\s+```yaml\n(.*?)```", text, re.S)
    assert block, "no yaml block under 'The user's view'"
    assert S.parse(yaml.safe_load(block.group(1))).name == "resnet18-fmnist"


def test_defaults():
    job = S.parse(minimal())
    s = job.spec
    assert job.namespace == "default"
    assert (s.stage, s.workers, s.slots_per_worker, s.backend, s.device, s.objective, s.suspend, s.seed) == \
        (2, 1, 1, "horovod", "auto", "params", False, 0)
    assert s.budget == S.BudgetSpec()
    assert s.resources == {}
    assert s.model.arch is None and s.data.format is None


def test_nulls_mean_defaults():
    m = minimal()
    m["spec"].update({k: None for k in ("stage", "workers", "slotsPerWorker", "backend", "device", "objective",
                                        "suspend", "seed", "budget", "resources")})
    assert S.parse(m) == S.parse(minimal())


def test_full_manifest():
    job = S.parse(full())
    s = job.spec
    assert job.namespace == "team-a"
    assert s.model == S.ModelSource(uri="pvc://models/m.pt", arch="vgg19")
    assert s.data == S.DataSource(uri="pvc://data/train.npz", format="npz")  # format inferred
    assert (s.stage, s.workers, s.slots_per_worker, s.backend, s.device, s.objective, s.suspend, s.seed) == \
        (1, 3, 2, "torch", "cuda", "macs", True, 7)
    assert s.budget.ratios == (0.5, 0.25) and s.budget.test_samples is None
    assert s.resources == {"limits": {"nvidia.com/gpu": 2}}


def test_data_format_inferred_and_given():
    m = minimal()
    m["spec"]["data"] = {"uri": "pvc://data/imgs/"}
    assert S.parse(m).spec.data.format == "imagefolder"
    m["spec"]["data"] = {"uri": "/data/x.npz", "format": "npz"}
    assert S.parse(m).spec.data.format == "npz"


def test_parse_does_not_modify_or_share_its_input():
    m = full()
    before = copy.deepcopy(m)
    job = S.parse(m)
    assert m == before
    m["spec"]["resources"]["limits"]["cpu"] = 1
    assert "cpu" not in job.spec.resources["limits"]


def test_kubernetes_metadata_and_status_are_accepted():
    m = minimal()
    m["metadata"].update({"uid": "1234", "resourceVersion": "5", "labels": {"a": "b"}, "generation": 2})
    m["status"] = {"phase": "Running"}
    assert S.parse(m).name == "job"


@pytest.mark.parametrize("make", [minimal, full])
def test_to_manifest_round_trips(make):
    job = S.parse(make())
    manifest = S.to_manifest(job)
    assert S.parse(manifest) == job
    assert S.to_manifest(S.parse(manifest)) == manifest
    # through YAML too, as `kubectl apply` would send it
    assert S.parse(yaml.safe_load(yaml.safe_dump(manifest))) == job


def test_to_manifest_fills_defaults():
    spec = S.to_manifest(S.parse(minimal()))["spec"]
    assert {k: spec[k] for k in ("stage", "workers", "slotsPerWorker", "backend", "device", "objective", "suspend", "seed")} == \
        {"stage": 2, "workers": 1, "slotsPerWorker": 1, "backend": "horovod", "device": "auto", "objective": "params",
         "suspend": False, "seed": 0}
    assert S.to_manifest(S.parse(minimal()))["metadata"] == {"name": "job", "namespace": "default"}
    full_spec = S.to_manifest(S.parse(full()))["spec"]
    assert full_spec["budget"]["ratios"] == [0.5, 0.25] and "testSamples" not in full_spec["budget"]
    assert full_spec["data"] == {"uri": "pvc://data/train.npz", "format": "npz"}


def test_example_round_trips():
    job = S.load(EXAMPLE)
    assert S.parse(S.to_manifest(job)) == job


# --------------------------------------------------------------------------------------------- rejected


def test_spec_error_is_a_kondense_error_and_pickles():
    err = rejects(with_spec(delta=0), "spec.delta")
    assert isinstance(err, KondenseError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.field, str(again)) == (err.field, str(err))


@pytest.mark.parametrize("manifest", [None, [], "job", 3])
def test_not_a_mapping(manifest):
    rejects(manifest, "", "mapping")


@pytest.mark.parametrize("key,value,field", [
    ("apiVersion", "kondense.dev/v1", "apiVersion"),
    ("apiVersion", None, "apiVersion"),
    ("kind", "Job", "kind"),
    ("kind", None, "kind"),
])
def test_wrong_api_version_or_kind(key, value, field):
    m = minimal()
    if value is None:
        del m[key]
    else:
        m[key] = value
    rejects(m, field, S.API_VERSION if key == "apiVersion" else S.KIND)


def test_unknown_top_level_key():
    m = minimal()
    m["sepc"] = {}
    rejects(m, "sepc", "unknown field", "spec")


@pytest.mark.parametrize("metadata,field", [
    (None, "metadata.name"),
    ({}, "metadata.name"),
    ({"namespace": "default"}, "metadata.name"),
    ({"name": "Resnet18"}, "metadata.name"),
    ({"name": "resnet_18"}, "metadata.name"),
    ({"name": "-resnet"}, "metadata.name"),
    ({"name": "resnet."}, "metadata.name"),
    ({"name": ""}, "metadata.name"),
    ({"name": 18}, "metadata.name"),
    ({"name": "a" * 254}, "metadata.name"),
    ({"name": "ok", "namespace": "Team_A"}, "metadata.namespace"),
    ({"name": "ok", "namespace": "a.b"}, "metadata.namespace"),
    ([], "metadata"),
])
def test_bad_metadata(metadata, field):
    m = minimal()
    if metadata is None:
        del m["metadata"]
    else:
        m["metadata"] = metadata
    rejects(m, field)


def test_good_names():
    for name in ("a", "0", "resnet18-fmnist", "a.b-c.d", ".".join(["x" * 63] * 3) + "." + "y" * 61):
        m = minimal()
        m["metadata"]["name"] = name
        assert S.parse(m).name == name


def test_missing_spec():
    m = minimal()
    del m["spec"]
    rejects(m, "spec", "missing")
    m["spec"] = []
    rejects(m, "spec", "mapping")


@pytest.mark.parametrize("value", [_DELETE, None, "1.0", True, False, 0, -1, 0.0, 100.5, float("nan"), float("inf"), [1]])
def test_bad_delta(value):
    rejects(with_spec(delta=value), "spec.delta", "(0, 100]")


@pytest.mark.parametrize("value", [1, 0.01, 100, 2.5])
def test_good_delta(value):
    assert S.parse(with_spec(delta=value)).spec.delta == float(value)


@pytest.mark.parametrize("value", [0, 3, "2", 2.0, True])
def test_bad_stage(value):
    rejects(with_spec(stage=value), "spec.stage", "1", "2")


@pytest.mark.parametrize("key", ["workers", "slotsPerWorker"])
@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, "2", True])
def test_bad_counts(key, value):
    rejects(with_spec(**{key: value}), f"spec.{key}", "integer >= 1")


@pytest.mark.parametrize("key,value,allowed", [
    ("backend", "mpi", "horovod, torch"),
    ("backend", "Horovod", "horovod, torch"),
    ("device", "gpu", "cpu, cuda, auto"),
    ("device", 0, "cpu, cuda, auto"),
    ("objective", "latency", "params, macs"),
    ("objective", ["params"], "params, macs"),
])
def test_bad_choices(key, value, allowed):
    rejects(with_spec(**{key: value}), f"spec.{key}", allowed)


@pytest.mark.parametrize("value", ["no", 0, 1, "false"])
def test_bad_suspend(value):
    rejects(with_spec(suspend=value), "spec.suspend", "true or false")


@pytest.mark.parametrize("value", [-1, 1.5, "0", True])
def test_bad_seed(value):
    rejects(with_spec(seed=value), "spec.seed", "integer")


@pytest.mark.parametrize("model,field,words", [
    (_DELETE, "spec.model", ("missing",)),
    ({}, "spec.model", ("exactly one of zoo and uri", "neither")),
    ({"arch": "resnet18"}, "spec.model", ("neither",)),
    ({"zoo": "resnet18", "uri": "/m.pt"}, "spec.model", ("both",)),
    ({"zoo": "resnet18", "weights": "x"}, "spec.model.weights", ("unknown field", "zoo, uri, arch")),
    ({"zoo": "resnet18", "arch": "resnet18"}, "spec.model.arch", ("uri",)),
    ({"zoo": ""}, "spec.model.zoo", ("non-empty string",)),
    ({"zoo": 18}, "spec.model.zoo", ("non-empty string",)),
    ({"uri": "/m.pt", "arch": 3}, "spec.model.arch", ("non-empty string",)),
    ({"uri": "s3://bucket/m.pt"}, "spec.model.uri", ("unsupported", "pvc://")),
    ({"uri": "pvc://Models/m.pt"}, "spec.model.uri", ("malformed pvc://", "DNS-1123")),
    ("resnet18", "spec.model", ("mapping",)),
])
def test_bad_model(model, field, words):
    rejects(with_spec(model=model), field, *words)


@pytest.mark.parametrize("data,field,words", [
    (_DELETE, "spec.data", ("missing",)),
    ({}, "spec.data", ("exactly one of dataset and uri", "neither")),
    ({"dataset": "fashion-mnist", "uri": "/d"}, "spec.data", ("both",)),
    ({"dataset": "fashion-mnist", "split": "train"}, "spec.data.split", ("unknown field", "dataset, uri, format")),
    ({"uri": "/d", "format": "csv"}, "spec.data.format", ("imagefolder, npz",)),
    ({"dataset": "fashion-mnist", "format": "npz"}, "spec.data.format", ("uri",)),
    ({"uri": "/d/imgs", "format": "npz"}, "spec.data.format", (".npz",)),
    ({"uri": "/d/x.npz", "format": "imagefolder"}, "spec.data.format", (".npz",)),
    ({"uri": "pvc:///x"}, "spec.data.uri", ("malformed pvc://",)),
    ({"dataset": ["fashion-mnist"]}, "spec.data.dataset", ("non-empty string",)),
])
def test_bad_data(data, field, words):
    rejects(with_spec(data=data), field, *words)


@pytest.mark.parametrize("output,field,words", [
    (_DELETE, "spec.output.uri", ("missing",)),
    ({}, "spec.output.uri", ("missing",)),
    ({"uri": None}, "spec.output.uri", ("missing",)),
    ({"uri": ""}, "spec.output.uri", ("non-empty string",)),
    ({"uri": "pvc://out", "path": "x"}, "spec.output.path", ("unknown field",)),
    ("pvc://models/out", "spec.output", ("mapping",)),
])
def test_bad_output(output, field, words):
    rejects(with_spec(output=output), field, *words)


@pytest.mark.parametrize("uri", [
    "pvc://",                     # no claim
    "pvc:///x",                   # empty claim
    "pvc://My_Claim/x",           # not a DNS-1123 label
    "pvc://claim.with.dots/x",    # a label has no dots
    "pvc://" + "a" * 64 + "/x",   # too long
    "pvc://-claim/x",
    "pvc://models/../etc",        # leaves the claim
    "pvc://models/a/%2E%2E/b",    # the same, escaped
    "pvc:models/out",             # not pvc://
    "file://host/abs",            # not file:///
    "file:relative",
    "http://example.com/m.pt",
])
def test_malformed_uris(uri):
    rejects(with_spec(output={"uri": uri}), "spec.output.uri", uri[:6])


@pytest.mark.parametrize("uri", ["pvc://models", "pvc://models/", "pvc://m-1/a/b.pt", "file:///abs/x", "/abs/x",
                                 "rel/x", "./rel", "../up/x", "~/x"])
def test_good_uris(uri):
    assert S.parse(with_spec(output={"uri": uri})).spec.output_uri == uri


@pytest.mark.parametrize("key", ["delat", "Delta", "slots_per_worker", "gpus"])
def test_unknown_spec_keys(key):
    err = rejects(with_spec(**{key: 1}), f"spec.{key}", "unknown field", "known:", "delta", "slotsPerWorker")
    if key == "delat":
        assert "did you mean 'delta'" in str(err)


def test_unknown_key_reported_before_missing_field():
    m = with_spec(delta=_DELETE)
    m["spec"]["delat"] = 1.0
    rejects(m, "spec.delat", "did you mean 'delta'")


@pytest.mark.parametrize("budget,field,words", [
    ({"stage1Epochs": 0}, "spec.budget.stage1Epochs", ("> 0",)),
    ({"stage1Epochs": -1}, "spec.budget.stage1Epochs", ("> 0",)),
    ({"stage1Epochs": "2"}, "spec.budget.stage1Epochs", ("> 0",)),
    ({"stepEpochs": 0.0}, "spec.budget.stepEpochs", ("> 0",)),
    ({"stepEpochs": float("inf")}, "spec.budget.stepEpochs", ("> 0",)),
    ({"stepEpochs": True}, "spec.budget.stepEpochs", ("> 0",)),
    ({"maxSteps": 0}, "spec.budget.maxSteps", (">= 1",)),
    ({"maxSteps": 1.5}, "spec.budget.maxSteps", (">= 1",)),
    ({"scanSamples": 0}, "spec.budget.scanSamples", (">= 1",)),
    ({"trainSamples": 0}, "spec.budget.trainSamples", (">= 1",)),
    ({"valSamples": -5}, "spec.budget.valSamples", (">= 1",)),
    ({"testSamples": "all"}, "spec.budget.testSamples", (">= 1",)),
    ({"ratios": []}, "spec.budget.ratios", ("non-empty list",)),
    ({"ratios": 0.5}, "spec.budget.ratios", ("non-empty list",)),
    ({"ratios": [0.5, 1.0]}, "spec.budget.ratios[1]", ("(0, 1)",)),
    ({"ratios": [0]}, "spec.budget.ratios[0]", ("(0, 1)",)),
    ({"ratios": [0.5, "0.25"]}, "spec.budget.ratios[1]", ("(0, 1)",)),
    ({"maxStep": 3}, "spec.budget.maxStep", ("unknown field", "did you mean 'maxSteps'")),
    ({"max_steps": 3}, "spec.budget.max_steps", ("unknown field", "maxSteps")),
    ([1], "spec.budget", ("mapping",)),
])
def test_bad_budget(budget, field, words):
    rejects(with_spec(budget=budget), field, *words)


def test_bad_resources():
    rejects(with_spec(resources=["cpu"]), "spec.resources", "mapping")


def test_first_problem_wins():
    m = with_spec(delta=0, stage=5)
    rejects(m, "spec.delta")


# --------------------------------------------------------------------------------------------- load


def test_load_relative_paths_against_the_manifest(tmp_path):
    d = tmp_path / "jobs"
    d.mkdir()
    m = minimal()
    m["spec"]["model"] = {"uri": "../models/m.pt", "arch": "resnet18"}
    m["spec"]["data"] = {"uri": "data/x.npz"}
    m["spec"]["output"] = {"uri": "pvc://models/out"}
    (d / "job.yaml").write_text(yaml.safe_dump(m))
    s = S.load(d / "job.yaml").spec
    assert s.model.uri == str(tmp_path / "models" / "m.pt")
    assert s.data.uri == str(d / "data" / "x.npz") and s.data.format == "npz"
    assert s.output_uri == "pvc://models/out"   # URIs stay as written
    # parse alone leaves relative paths as written
    assert S.parse(m).spec.model.uri == "../models/m.pt"


def test_load_errors_name_the_file(tmp_path):
    p = tmp_path / "job.yaml"
    with pytest.raises(S.SpecError, match="no such file"):
        S.load(p)
    with pytest.raises(S.SpecError, match="directory"):
        S.load(tmp_path)
    for text, words in [("", "empty"), ("a: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "mapping"),
                        ("just a string\n", "mapping"), ("a: 1\n---\nb: 2\n", "2 YAML documents"),
                        ("spec: {delta: 1, delta: 2}\n", "duplicate key"),
                        (b"\xff\xfe\x00".decode("latin-1"), "")]:
        p.write_text(text, encoding="utf-8" if words else "latin-1")
        with pytest.raises(S.SpecError) as info:
            S.load(p)
        assert str(p) in str(info.value) and words in str(info.value)
    m = minimal()
    m["spec"]["delta"] = 0
    p.write_text(yaml.safe_dump(m))
    with pytest.raises(S.SpecError) as info:
        S.load(p)
    assert info.value.field == "spec.delta" and str(info.value).startswith(f"{p}: spec.delta: ")


def test_load_allows_yaml_merge_keys(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(minimal()) + "x-defaults: &d {workers: 2}\n")
    with pytest.raises(S.SpecError, match="x-defaults: unknown field"):
        S.load(p)
    text = yaml.safe_dump(minimal()).replace("spec:\n", "spec:\n  <<: {workers: 2, delta: 5}\n")
    p.write_text(text)
    s = S.load(p).spec
    assert s.workers == 2 and s.delta == 1.0  # an explicit key overrides a merged one


# --------------------------------------------------------------------------------------------- URIs


def test_local_path(tmp_path):
    root = tmp_path / "pvc"
    assert S.local_path("pvc://models/out/m.pt", root) == root / "models" / "out" / "m.pt"
    assert S.local_path("pvc://models/out/", root) == root / "models" / "out"
    assert S.local_path("pvc://models", root) == root / "models"
    assert S.local_path("pvc://models/a%20b", "/mnt/pvc") == Path("/mnt/pvc/models/a b")
    assert S.local_path("file:///data/x.npz", root) == Path("/data/x.npz")
    assert S.local_path("file:///data/my%20set", root) == Path("/data/my set")
    assert S.local_path("/abs/x", root) == Path("/abs/x")
    assert S.local_path("/abs/x", root, base_dir=tmp_path) == Path("/abs/x")
    assert S.local_path("rel/x", root) == Path("rel/x")
    assert S.local_path("rel/x", root, base_dir=tmp_path) == tmp_path / "rel" / "x"
    assert S.local_path("~/x", root, base_dir=tmp_path) == Path.home() / "x"
    with pytest.raises(S.SpecError):
        S.local_path("s3://b/x", root)


def test_claims():
    assert S.claims(S.parse(full()).spec) == ("data", "models")
    assert S.claims(S.parse(with_spec(output={"uri": "/tmp/out"})).spec) == ()


# --------------------------------------------------------------------------------------------- engine arguments


def test_compress_and_budget_kwargs():
    s = S.parse(full()).spec
    assert S.compress_kwargs(s) == {"delta": 1.0, "stage": 1, "objective": "macs", "device": "cuda", "seed": 7,
                                    "train_samples": 1000, "val_samples": 200, "test_samples": None, "arch": "vgg19"}
    assert S.budget_kwargs(s) == {"stage1_epochs": 0.5, "step_epochs": 2.0, "max_steps": 3, "scan_samples": 500,
                                  "ratios": (0.5, 0.25)}
    d = S.parse(minimal()).spec
    assert S.budget_kwargs(d) == {}
    assert S.compress_kwargs(d) == {"delta": 1.0, "stage": 2, "objective": "params", "device": "auto", "seed": 0,
                                    "train_samples": None, "val_samples": None, "test_samples": None, "arch": None}


def test_kwargs_fit_the_engine():
    import inspect

    from kondense.api import compress
    from kondense.pipeline.context import Budget

    s = S.parse(full()).spec
    Budget(**S.budget_kwargs(s))  # every key is a Budget field
    params = inspect.signature(compress).parameters
    assert set(S.compress_kwargs(s)) <= set(params)
    assert set(S.OBJECTIVES) == set(__import__("kondense.pipeline.conductor", fromlist=["OBJECTIVES"]).OBJECTIVES)


def test_model_and_data_arguments(tmp_path):
    root = tmp_path / "pvc"
    s = S.parse(minimal()).spec
    assert S.model_argument(s, root) == "zoo:resnet18"
    assert S.data_argument(s, root) == "fashion-mnist"
    s = S.parse(full()).spec
    assert S.model_argument(s, root) == str(root / "models" / "m.pt")
    assert S.data_argument(s, root) == str(root / "data" / "train.npz")
    s = S.load(EXAMPLE).spec
    assert S.model_argument(s, root) == "zoo:mobilenet_v1"


# --------------------------------------------------------------------------------------------- no torch


def test_import_does_not_load_torch():
    code = ("import sys, kondense.job.spec as s; s.load(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
