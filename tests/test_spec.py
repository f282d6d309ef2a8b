"""The CompressionJob manifest: parsing, defaults (the CRD's), round trips, error messages, URIs,
the engine's arguments. Which manifests are accepted at all is tested against the CRD itself, in
tests/operator/test_crd_schema.py; here, what parse makes of them and how it says no."""

from __future__ import annotations

import copy
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kondense.errors import KondenseError
from kondense.job import spec as S

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "local-stage2.yaml"
DESIGN = REPO.parent / "shared" / "DESIGN.md"
CRD_SPEC = yaml.safe_load((REPO / "crds" / "compressionjob.yaml").read_text())["spec"]["versions"][0]["schema"][
    "openAPIV3Schema"
]["properties"]["spec"]["properties"]


def minimal() -> dict:
    return {
        "apiVersion": S.API_VERSION,
        "kind": S.KIND,
        "metadata": {"name": "job"},
        "spec": {
            "model": {"zoo": "resnet18"},
            "data": {"dataset": "fashion-mnist"},
            "delta": 1.0,
            "output": {"uri": "pvc://models/out/"},
        },
    }


def full() -> dict:
    m = minimal()
    m["metadata"]["namespace"] = "team-a"
    m["spec"].update(
        {
            "model": {"uri": "pvc://models/m.pt", "arch": "vgg19"},
            "data": {"uri": "pvc://data/train.npz"},
            "stage": 1,
            "workers": 3,
            "slotsPerWorker": 2,
            "backend": "horovod",
            "device": "cuda",
            "objective": "macs",
            "latency": {"runtime": "onnxruntime", "batch": 32},
            "quantize": "int8",
            "suspend": True,
            "seed": 7,
            "budget": {
                "stage1Epochs": 0.5,
                "stepEpochs": 2,
                "maxSteps": 3,
                "scanSamples": 500,
                "ratios": [0.5, 0.25],
                "trainSamples": 1000,
                "valSamples": 200,
                "testSamples": None,
            },
            "resources": {"limits": {"nvidia.com/gpu": 2}},
            "maxRestarts": 5,
            "restartOnOOMKilled": True,
            "activeDeadlineSeconds": 3600,
            "managedBy": "kondense.dev/operator",
        }
    )
    return m


def with_spec(**changes) -> dict:
    m = minimal()
    m["spec"].update(changes)
    return m


def rejects(manifest, field: str, *words: str) -> S.SpecError:
    with pytest.raises(S.SpecError) as info:
        S.parse(manifest)
    err = info.value
    assert err.field == field, f"expected field {field!r}, got {err.field!r}: {err}"
    assert str(err).startswith(f"{field}: " if field else "")
    for word in words:
        assert word in str(err), f"{word!r} not in {str(err)!r}"
    return err


# --------------------------------------------------------------------------------------------- accepted


def test_example_parses_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = S.load(EXAMPLE)
    s = job.spec
    assert (job.name, job.namespace) == ("mobilenet-v1-fmnist-local", "default")
    assert (s.model, s.data) == (S.ModelSource(zoo="mobilenet_v1"), S.DataSource(dataset="fashion-mnist"))
    assert (s.delta, s.stage, s.workers, s.slots_per_worker, s.backend, s.device) == (2.0, 2, 2, 1, "torch", "cpu")
    assert s.budget == S.BudgetSpec(
        stage1_epochs=1.0,
        max_steps=1,
        scan_samples=200,
        ratios=(0.5,),
        train_samples=1024,
        val_samples=300,
        test_samples=300,
    )
    assert Path(s.output_uri) == REPO / "out" / "local-stage2"  # relative to the manifest, not to the cwd


@pytest.mark.skipif(not DESIGN.exists(), reason="DESIGN.md lives outside the repository")
def test_design_md_manifest_parses():
    block = re.search(r"## The user's view\s+```yaml\n(.*?)```", DESIGN.read_text(), re.DOTALL)
    assert block and S.parse(yaml.safe_load(block.group(1))).name == "resnet18-fmnist"


def test_defaults_are_the_crds():
    s = S.parse(minimal()).spec
    assert S.DEFAULTS == {k: v["default"] for k, v in CRD_SPEC.items() if "default" in v}
    assert S.DEFAULTS["backend"] == "torch", "one default backend everywhere: torch is always installed"
    # an object defaulted to {}, whose own fields carry the defaults: today's behaviour, torch at batch 1
    latency = CRD_SPEC["latency"]["properties"]
    assert S.DEFAULTS["latency"] == {} and s.latency == S.LatencySpec("torch", 1)
    assert (S.DEFAULT_LATENCY_RUNTIME, S.DEFAULT_LATENCY_BATCH) == (
        latency["runtime"]["default"],
        latency["batch"]["default"],
    )
    assert S.LATENCY_RUNTIMES == tuple(latency["runtime"]["enum"]) == ("torch", "onnxruntime")
    assert {
        k: getattr(s, a)
        for k, a in [
            ("stage", "stage"),
            ("workers", "workers"),
            ("slotsPerWorker", "slots_per_worker"),
            ("backend", "backend"),
            ("device", "device"),
            ("objective", "objective"),
            ("suspend", "suspend"),
            ("seed", "seed"),
            ("maxRestarts", "max_restarts"),
            ("restartOnOOMKilled", "restart_on_oom"),
            ("managedBy", "managed_by"),
        ]
    } == {k: v for k, v in S.DEFAULTS.items() if k != "latency"}
    assert s.active_deadline_s is None and "activeDeadlineSeconds" not in S.DEFAULTS, "no deadline unless asked"
    assert S.MANAGED_BY == tuple(CRD_SPEC["managedBy"]["enum"]) and S.MANAGED_BY_OPERATOR == S.DEFAULTS["managedBy"]
    assert "quantize" not in S.DEFAULTS and s.quantize == "none", "quantize depends on the stage (resolve_quantize)"
    for name, key in [
        ("BACKENDS", "backend"),
        ("DEVICES", "device"),
        ("OBJECTIVES", "objective"),
        ("QUANTIZE", "quantize"),
    ]:
        assert getattr(S, name) == tuple(CRD_SPEC[key]["enum"])
    assert S.DATA_FORMATS == tuple(CRD_SPEC["data"]["properties"]["format"]["enum"])
    assert (s.budget, s.resources, s.model.arch, s.data.format) == (S.BudgetSpec(), {}, None, None)
    assert {f for f in S.BudgetSpec.__dataclass_fields__} == set(S.BUDGET_KEYS.values())


def test_cli_flags_default_to_the_crd():
    from kondense.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if a.dest == "command"]
    compress = commands.choices["compress"]
    for key in ("stage", "objective", "device", "seed", "backend"):
        assert compress.get_default(key) == S.DEFAULTS[key], key
    assert compress.get_default("latency_runtime") == S.DEFAULT_LATENCY_RUNTIME
    assert compress.get_default("latency_batch") == S.DEFAULT_LATENCY_BATCH


def test_nulls_mean_defaults_and_metadata_and_status_are_kubernetes():
    m = minimal()
    m["spec"].update(
        {
            k: None
            for k in (
                "stage",
                "workers",
                "slotsPerWorker",
                "backend",
                "device",
                "objective",
                "latency",
                "suspend",
                "seed",
                "budget",
                "resources",
            )
        }
    )
    m["metadata"].update({"uid": "1234", "resourceVersion": "5", "labels": {"a": "b"}, "generation": 2})
    m["status"] = {"phase": "Running", "conditions": ["..."]}  # the operator's; the API server ignores it on create
    assert S.parse(m) == S.parse(minimal())


def test_full_manifest_and_inferred_format():
    job = S.parse(full())
    s = job.spec
    assert job.namespace == "team-a"
    assert (s.model, s.data) == (
        S.ModelSource(uri="pvc://models/m.pt", arch="vgg19"),
        S.DataSource(uri="pvc://data/train.npz", format="npz"),
    )
    assert (s.stage, s.workers, s.slots_per_worker, s.backend, s.device, s.objective, s.suspend, s.seed) == (
        1,
        3,
        2,
        "horovod",
        "cuda",
        "macs",
        True,
        7,
    )
    assert s.budget.ratios == (0.5, 0.25) and s.budget.test_samples is None and s.budget.step_epochs == 2.0
    assert s.latency == S.LatencySpec("onnxruntime", 32)
    assert S.parse(with_spec(latency={"batch": 8})).spec.latency == S.LatencySpec("torch", 8), "runtime defaulted"
    assert s.resources == {"limits": {"nvidia.com/gpu": 2}}
    for uri, fmt in [("pvc://data/imgs/", "imagefolder"), ("/d/x.npz", "npz"), ("x.npz/", "imagefolder")]:
        assert S.parse(with_spec(data={"uri": uri})).spec.data.format == fmt


def test_parse_does_not_modify_or_share_its_input():
    m = full()
    before = copy.deepcopy(m)
    job = S.parse(m)
    assert m == before
    m["spec"]["resources"]["limits"]["cpu"] = 1
    assert "cpu" not in job.spec.resources["limits"]


@pytest.mark.parametrize(
    "job", [S.parse(minimal()), S.parse(full()), S.load(EXAMPLE)], ids=["minimal", "full", "example"]
)
def test_to_manifest_round_trips(job):
    manifest = S.to_manifest(job)
    assert S.parse(manifest) == job
    assert S.parse(yaml.safe_load(yaml.safe_dump(manifest))) == job  # through YAML, as `kubectl apply` sends it
    latency = job.spec.latency
    assert manifest["spec"]["latency"] == {"runtime": latency.runtime, "batch": latency.batch}
    scalars = [k for k in S.DEFAULTS if k != "latency"]
    assert {k: manifest["spec"][k] for k in scalars} == {
        k: getattr(job.spec, a)
        for k, a in zip(
            scalars,
            (
                "stage",
                "workers",
                "slots_per_worker",
                "backend",
                "device",
                "objective",
                "suspend",
                "seed",
                "max_restarts",
                "restart_on_oom",
                "managed_by",
            ),
            strict=True,
        )
    }
    assert None not in manifest["spec"]["budget"].values() and manifest["metadata"]["namespace"] == job.namespace


def test_kubernetes_only_fields_parse_round_trip_and_leave_the_engine_alone():
    plain = S.parse(minimal()).spec
    m = with_spec(maxRestarts=0, restartOnOOMKilled=True, activeDeadlineSeconds=90, managedBy="kueue.x-k8s.io")
    s = S.parse(m).spec
    assert (s.max_restarts, s.restart_on_oom, s.active_deadline_s, s.managed_by) == (0, True, 90, S.MANAGED_BY_KUEUE)
    assert S.parse(S.to_manifest(S.parse(m))).spec == s
    # `kondense run` passes the same arguments with or without them: they are the operator's
    assert (S.compress_kwargs(s, "/p"), S.budget_kwargs(s)) == (S.compress_kwargs(plain, "/p"), S.budget_kwargs(plain))
    assert "activeDeadlineSeconds" not in S.to_manifest(S.parse(minimal()))["spec"]


@pytest.mark.parametrize(
    "change,field,words",
    [
        ({"maxRestarts": 101}, "spec.maxRestarts", ["[0, 100]"]),
        ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds", [">= 1"]),
        ({"managedBy": "kueue"}, "spec.managedBy", ["kueue.x-k8s.io"]),
        ({"managedBy": "kueue.x-k8s.io", "suspend": True}, "spec.suspend", ["Kueue", "Workload"]),
    ],
)
def test_kubernetes_only_fields_are_checked(change, field, words):
    rejects(with_spec(**change), field, *words)


def test_stage_3_implies_int8_and_runs_as_the_tail_of_stage_2():
    s = S.parse(with_spec(stage=3)).spec
    assert (s.stage, s.quantize) == (3, "int8")
    assert S.parse(with_spec(stage=3, quantize="int8")).spec == s
    assert S.parse(S.to_manifest(S.parse(with_spec(stage=3)))).spec == s
    for stage in (1, 2):  # quantize: int8 after stage 1 or 2 stays what it was
        assert S.parse(with_spec(stage=stage, quantize="int8")).spec.quantize == "int8"
        assert S.parse(with_spec(stage=stage)).spec.quantize == "none"
    assert S.compress_kwargs(s, "pvc")["quantize"] == "int8"
    # one Job per stage for stages 1 and 2; stage 3 is the last Job's tail, which runs compress(stage=3)
    assert [S.job_stages(n) for n in (1, 2, 3)] == [(1,), (1, 2), (1, 2)]
    assert [S.run_stage_of(3, n) for n in (1, 2)] == [1, 3]
    assert [S.run_stage_of(2, n) for n in (1, 2)] == [1, 2]
    assert S.STAGES == (1, 2, 3)
    S.check_settings(stage=3)
    S.check_settings(stage=3, quantize="int8")
    S.check_settings(quantize="none")  # no stage given: nothing to contradict


# --------------------------------------------------------------------------------------------- refused


def test_spec_error_is_a_kondense_error_and_pickles():
    err = rejects(with_spec(delta=0), "spec.delta")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(err, KondenseError) and (again.field, str(again)) == (err.field, str(err))


@pytest.mark.parametrize(
    "change,field",
    [
        ({"apiVersion": "kondense.dev/v1"}, "apiVersion"),
        ({"apiVersion": None}, "apiVersion"),
        ({"kind": "Job"}, "kind"),
        ({"metadata": None}, "metadata.name"),
        ({"metadata": {}}, "metadata.name"),
        ({"metadata": []}, "metadata"),
        ({"metadata": {"name": "Resnet18"}}, "metadata.name"),
        ({"metadata": {"name": "resnet_18"}}, "metadata.name"),
        ({"metadata": {"name": "-r"}}, "metadata.name"),
        ({"metadata": {"name": "r."}}, "metadata.name"),
        ({"metadata": {"name": ""}}, "metadata.name"),
        ({"metadata": {"name": 18}}, "metadata.name"),
        ({"metadata": {"name": "a" * 254}}, "metadata.name"),
        ({"metadata": {"name": "ok", "namespace": "a.b"}}, "metadata.namespace"),
        ({"metadata": {"name": "ok", "namespace": "Team_A"}}, "metadata.namespace"),
        ({"sepc": {}}, "sepc"),
        ({"spec": None}, "spec"),
        ({"spec": []}, "spec"),
    ],
)
def test_what_the_document_is(change, field):
    m = minimal()
    m.update(change)
    rejects(m, field, {"apiVersion": S.API_VERSION, "kind": S.KIND}.get(field, ""))


@pytest.mark.parametrize("manifest", [None, [], "job", 3])
def test_not_a_mapping(manifest):
    rejects(manifest, "", "mapping")


def test_good_names():
    for name in ("a", "0", "resnet18-fmnist", "a.b-c.d", ".".join(["x" * 63] * 3) + "." + "y" * 61):
        assert S.parse({**minimal(), "metadata": {"name": name}}).name == name


# Each kind of refusal once: the field named, and words that say what is wrong and what is allowed
# (from the CRD: its bounds, enums, descriptions and rule messages).
REFUSALS = [
    ({"delta": None}, "spec.delta", "missing", "accuracy drop"),
    ({"delta": 0}, "spec.delta", "must be a number in (0, 100], got 0"),
    ({"delta": "1.0"}, "spec.delta", "must be a number, got the string '1.0'"),
    ({"delta": True}, "spec.delta", "must be a number, got bool True"),
    ({"delta": float("nan")}, "spec.delta", "finite"),
    ({"stage": 4}, "spec.stage", "one of 1, 2, 3", "annealing", "INT8"),
    ({"stage": 3, "quantize": "none"}, "spec.quantize", "must be int8 or omitted at stage 3", "choose stage 2"),
    ({"workers": 0}, "spec.workers", "an integer in [1, 256], got 0", "Pods"),
    ({"slotsPerWorker": 2.0}, "spec.slotsPerWorker", "must be an integer, got float 2.0"),
    ({"backend": "Horovod"}, "spec.backend", "one of torch, horovod"),
    ({"device": 0}, "spec.device", "must be a string, got int 0"),
    ({"suspend": "no"}, "spec.suspend", "true or false"),
    ({"seed": -1}, "spec.seed", ">= 0"),
    ({"delat": 1}, "spec.delat", "unknown field (did you mean 'delta'?); known: model, data, delta"),
    ({"delat": 1, "delta": None}, "spec.delat", "did you mean 'delta'"),  # an unknown key before a missing one
    ({"delta": 0, "stage": 5}, "spec.delta"),  # the first problem in the CRD's field order wins
    ({"model": None}, "spec.model", "missing", "zoo"),
    ({"model": "resnet18"}, "spec.model", "must be a mapping, got the string 'resnet18'"),
    ({"model": {}}, "spec.model", "give the network: zoo, torchvision, factory, or uri"),
    ({"model": {"zoo": "r", "uri": "/m.pt"}}, "spec.model.uri", "a zoo model takes the zoo's weights"),
    ({"model": {"zoo": "r", "weights": "x"}}, "spec.model.weights", "unknown field", "zoo, torchvision, factory"),
    ({"model": {"zoo": "r", "arch": "r"}}, "spec.model.arch", "only goes with uri alone"),
    ({"model": {"factory": "a:b", "arch": "r"}}, "spec.model.arch", "only goes with uri alone"),
    ({"model": {"zoo": "r", "torchvision": "resnet18"}}, "spec.model.torchvision", "zoo or torchvision, not both"),
    ({"model": {"torchvision": "resnet18", "factory": "a:b"}}, "spec.model.factory", "not several"),
    (
        {"model": {"torchvision": "resnet1", "uri": "/w.pt"}},
        "spec.model.torchvision",
        "got 'resnet1' (did you mean 'resnet18'?)",
    ),
    ({"model": {"torchvision": "fasterrcnn_resnet50_fpn", "uri": "/w.pt"}}, "spec.model.torchvision", "must be one of"),
    ({"model": {"torchvision": "resnet18"}}, "spec.model.torchvision", "needs its trained weights"),
    (
        {"model": {"torchvision": "resnet18", "uri": "/w.pt", "pretrained": "DEFAULT"}},
        "spec.model.torchvision",
        "one of the two",
    ),
    ({"model": {"factory": "mynets.build"}}, "spec.model.factory", "must be package.module:function"),
    ({"model": {"factory": "my-nets:build"}}, "spec.model.factory", "must be package.module:function"),
    ({"model": {"factory": "a:b", "pretrained": "DEFAULT"}}, "spec.model.pretrained", "only goes with torchvision"),
    ({"model": {"zoo": "r", "codeUri": "pvc://code/src"}}, "spec.model.codeUri", "only goes with factory"),
    ({"model": {"factory": "a:b", "codeUri": "s3://b/src"}}, "spec.model.codeUri", "no other scheme"),
    ({"model": {"zoo": "r", "kwargs": {"width": 2}}}, "spec.model.kwargs", "only goes with torchvision or factory"),
    (
        {"data": {"dataset": "fashion-mnist", "inputSize": [0]}},
        "spec.data.inputSize[0]",
        "an integer in [1, 4096], got 0",
    ),
    ({"data": {"dataset": "fashion-mnist", "inputSize": [32, 32, 3]}}, "spec.data.inputSize", "1 to 2 entries, got 3"),
    ({"data": {"dataset": "fashion-mnist", "augment": "flip"}}, "spec.data.augment", "crop-flip"),
    ({"data": {"dataset": "fashion-mnist", "normalize": {"mean": [0.5]}}}, "spec.data.normalize.std", "missing"),
    (
        {"data": {"dataset": "fashion-mnist", "normalize": {"mean": [0.5], "std": [0.2, 0.2]}}},
        "spec.data.normalize.std",
        "as many as mean",
    ),
    (
        {"data": {"dataset": "fashion-mnist", "normalize": {"mean": [0.5], "std": [0]}}},
        "spec.data.normalize.std[0]",
        "0",
    ),
    ({"model": {"zoo": ""}}, "spec.model.zoo", "1 to 253 characters, got 0"),
    ({"model": {"zoo": " "}}, "spec.model.zoo", "blank"),
    ({"model": {"uri": "s3://b/m.pt"}}, "spec.model.uri", "pvc://CLAIM/path", "no other scheme"),
    ({"data": {"dataset": "f", "format": "npz"}}, "spec.data.format", "only goes with uri"),
    ({"data": {"uri": "/d", "format": "csv"}}, "spec.data.format", "one of imagefolder, npz"),
    ({"data": {"uri": "/d/imgs", "format": "npz"}}, "spec.data.format", "contradicts uri", ".npz"),
    ({"data": {"dataset": ["f"]}}, "spec.data.dataset", "must be a string, got a list"),
    ({"output": {}}, "spec.output.uri", "missing", "pvc://CLAIM/path"),
    ({"output": {"uri": "pvc://m/a/%2e%2E"}}, "spec.output.uri", "'..'", "leave the claim"),
    ({"output": {"uri": "pvc://m", "path": "x"}}, "spec.output.path", "unknown field"),
    ({"budget": {"maxStep": 3}}, "spec.budget.maxStep", "did you mean 'maxSteps'"),
    ({"budget": {"stepEpochs": float("inf")}}, "spec.budget.stepEpochs", "finite"),
    ({"budget": {"ratios": []}}, "spec.budget.ratios", "1 to 64 entries, got 0"),
    ({"budget": {"ratios": [0.5, 1.0]}}, "spec.budget.ratios[1]", "in (0, 1), got 1.0", "fraction"),
    ({"budget": [1]}, "spec.budget", "mapping"),
    ({"resources": {"limits": {"cpu": 0.5}}}, "spec.resources.limits.cpu", "an integer or a string, got float 0.5"),
    (
        {"resources": {"limits": {"memory": "8 GB"}}},
        "spec.resources.limits.memory",
        "'8 GB' is not allowed",
        "quantity",
    ),
    ({"resources": {"limits": {f"r{i}": 1 for i in range(33)}}}, "spec.resources.limits", "at most 32 entries"),
]


@pytest.mark.parametrize(
    "change,field,words", [(r[0], r[1], r[2:]) for r in REFUSALS], ids=[f"{r[1]}-{i}" for i, r in enumerate(REFUSALS)]
)
def test_refusals_name_the_field_and_say_why(change, field, words):
    rejects(with_spec(**change), field, *words)


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://",
        "pvc:///x",
        "pvc://My_Claim/x",
        "pvc://claim.dots/x",
        f"pvc://{'a' * 64}/x",
        "pvc://-claim/x",
        "pvc://m/../etc",
        "pvc://m/a/%2E%2E/b",
        "pvc:models/out",
        "file://host/abs",
        "file:relative",
        "http://example.com/m.pt",
    ],
)
def test_malformed_uris(uri):
    rejects(with_spec(output={"uri": uri}), "spec.output.uri")
    with pytest.raises(S.SpecError):
        S.local_path(uri, "/mnt/pvc")


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://models",
        "pvc://models/",
        "pvc://m-1/a/b.pt",
        "pvc://m/a..b/...",
        "file:///abs/x",
        "/abs/x",
        "rel/x",
        "./rel",
        "../up/x",
        "~/x",
    ],
)
def test_good_uris(uri):
    assert S.parse(with_spec(output={"uri": uri})).spec.output_uri == uri


def test_check_settings_judges_with_the_crd():
    S.check_settings(
        delta=1.0,
        stage=1,
        objective="macs",
        backend="torch",
        device="cpu",
        seed=0,
        workers=2,
        slotsPerWorker=1,
        budget={"maxSteps": 2},
        resources=None,
    )
    for values, field, words in [
        ({"delta": 0}, "spec.delta", "(0, 100]"),
        ({"stage": 4}, "spec.stage", "1, 2, 3"),
        ({"stage": 3, "quantize": "none"}, "spec.quantize", "for float outputs only, choose stage 2"),
        ({"objective": "flops"}, "spec.objective", "params, macs, latency"),
        ({"latency": {"runtime": "tensorrt"}}, "spec.latency.runtime", "torch, onnxruntime"),
        ({"latency": {"batch": 0}}, "spec.latency.batch", "[1, 4096]"),
        ({"latency": {"batch": 5000}}, "spec.latency.batch", "[1, 4096]"),
        ({"workers": 0}, "spec.workers", "[1, 256]"),
        ({"seed": 1.5}, "spec.seed", "integer"),
        ({"budget": {"ratios": [2]}}, "spec.budget.ratios[0]", "(0, 1)"),
        ({"delta": 0, "arch": "x"}, "spec.arch", "not a CompressionJob setting"),
    ]:
        # an unknown key first, then the CRD's field order
        with pytest.raises(S.SpecError) as info:
            S.check_settings(**values)
        assert info.value.field == field and words in str(info.value)


def test_parse_for_kubernetes_needs_the_output_on_a_claim():
    from kondense_operator import reconcile

    assert reconcile.parse_for_kubernetes is S.parse_for_kubernetes
    assert S.parse_for_kubernetes(minimal()) == S.parse(minimal())
    for uri in ("/abs/out", "file:///out", "rel/out"):
        with pytest.raises(S.SpecError) as info:
            S.parse_for_kubernetes(with_spec(output={"uri": uri}))
        assert info.value.field == "spec.output.uri" and "stage 2 continues" in str(info.value)
        assert S.parse(with_spec(output={"uri": uri})).spec.output_uri == uri, "`kondense run` writes where it is told"
    with pytest.raises(S.SpecError, match="spec.delta"):
        S.parse_for_kubernetes(with_spec(delta=0))


# --------------------------------------------------------------------------------------------- load


def test_load_relative_paths_against_the_manifest(tmp_path):
    (tmp_path / "jobs").mkdir()
    m = with_spec(model={"uri": "../models/m.pt", "arch": "r"}, data={"uri": "data/x.npz"}, output={"uri": "pvc://m/o"})
    (tmp_path / "jobs" / "job.yaml").write_text(yaml.safe_dump(m))
    s = S.load(tmp_path / "jobs" / "job.yaml").spec
    assert s.model.uri == str(tmp_path / "models" / "m.pt")
    assert (s.data.uri, s.data.format) == (str(tmp_path / "jobs" / "data" / "x.npz"), "npz")
    assert s.output_uri == "pvc://m/o"  # URIs stay as written
    assert S.parse(m).spec.model.uri == "../models/m.pt"  # parse alone leaves relative paths as written


def test_load_errors_name_the_file(tmp_path):
    p = tmp_path / "job.yaml"
    with pytest.raises(S.SpecError, match="no such file"):
        S.load(p)
    with pytest.raises(S.SpecError, match="directory"):
        S.load(tmp_path)
    for text, words in [
        ("", "empty"),
        ("a: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "mapping"),
        ("a: 1\n---\nb: 2\n", "2 YAML documents"),
        ("spec: {delta: 1, delta: 2}\n", "duplicate key"),
        (yaml.safe_dump(with_spec(delta=0)), "spec.delta: must be a number"),
    ]:
        p.write_text(text)
        with pytest.raises(S.SpecError) as info:
            S.load(p)
        assert str(info.value).startswith(f"{p}: ") and words in str(info.value)
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(S.SpecError, match="cannot read it"):
        S.load(p)


def test_load_allows_yaml_merge_keys(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(minimal()).replace("spec:\n", "spec:\n  <<: {workers: 2, delta: 5}\n"))
    s = S.load(p).spec
    assert s.workers == 2 and s.delta == 1.0  # an explicit key overrides a merged one


# --------------------------------------------------------------------------------------------- URIs and the engine


def test_local_path_and_claims(tmp_path):
    root = tmp_path / "pvc"
    assert S.local_path("pvc://models/out/m.pt", root) == root / "models" / "out" / "m.pt"
    assert S.local_path("pvc://models", root) == root / "models"
    assert S.local_path("pvc://models/a%20b", "/mnt/pvc") == Path("/mnt/pvc/models/a b")
    assert S.local_path("file:///data/my%20set", root) == Path("/data/my set")
    assert S.local_path("/abs/x", root, base_dir=tmp_path) == Path("/abs/x")
    assert S.local_path("rel/x", root) == Path("rel/x")
    assert S.local_path("rel/x", root, base_dir=tmp_path) == tmp_path / "rel" / "x"
    assert S.local_path("~/x", root, base_dir=tmp_path) == Path.home() / "x"
    assert S.claims(S.parse(full()).spec) == ("data", "models")
    assert S.claims(S.parse(with_spec(output={"uri": "/tmp/out"})).spec) == ()


def test_engine_arguments(tmp_path):
    import inspect

    from kondense.api import compress
    from kondense.pipeline.budget import Budget
    from kondense.pipeline.conductor import COSTS

    s = S.parse(full()).spec
    assert S.compress_kwargs(s, tmp_path) == {
        "delta": 1.0,
        "stage": 1,
        "objective": "macs",
        "latency_runtime": "onnxruntime",
        "latency_batch": 32,
        "quantize": "int8",
        "device": "cuda",
        "seed": 7,
        "arch": "vgg19",
        "weights": None,  # the model file itself is compress()'s model argument
        "pretrained": None,
        "model_kwargs": None,
        "code_dir": None,
        "input_size": None,
        "augment": "none",
        "mean": None,
        "std": None,
    }
    assert S.budget_kwargs(s) == {
        "stage1_epochs": 0.5,
        "step_epochs": 2.0,
        "max_steps": 3,
        "scan_samples": 500,
        "ratios": (0.5, 0.25),
        "train_samples": 1000,
        "val_samples": 200,
    }
    Budget(**S.budget_kwargs(s))  # every key is a Budget field
    assert set(S.compress_kwargs(s, tmp_path)) <= set(inspect.signature(compress).parameters)
    assert set(S.OBJECTIVES) == set(COSTS)  # the engine can cost every objective the CRD allows
    assert (S.model_argument(s, tmp_path), S.data_argument(s, tmp_path)) == (
        str(tmp_path / "models" / "m.pt"),
        str(tmp_path / "data" / "train.npz"),
    )
    d = S.parse(minimal()).spec
    assert (S.model_argument(d, tmp_path), S.data_argument(d, tmp_path), S.budget_kwargs(d)) == (
        "zoo:resnet18",
        "fashion-mnist",
        {},
    )


@pytest.mark.parametrize(
    ("model", "argument", "extra"),
    [
        (
            {"torchvision": "mobilenet_v3_small", "uri": "pvc://models/tv.pt", "kwargs": {"dropout": 0.1}},
            "torchvision:mobilenet_v3_small",
            {"weights": "models/tv.pt", "model_kwargs": {"dropout": 0.1}, "code_dir": None, "pretrained": None},
        ),
        (
            {"torchvision": "resnet18", "pretrained": "DEFAULT"},
            "torchvision:resnet18",
            {"weights": None, "model_kwargs": None, "code_dir": None, "pretrained": "DEFAULT"},
        ),
        (
            {
                "factory": "mynets.small:build",
                "codeUri": "pvc://code/src",
                "uri": "pvc://models/w.pt",
                "kwargs": {"w": 8},
            },
            "mynets.small:build",
            {"weights": "models/w.pt", "model_kwargs": {"w": 8}, "code_dir": "code/src", "pretrained": None},
        ),
    ],
)
def test_model_sources_reach_the_engine_and_round_trip(tmp_path, model, argument, extra):
    m = minimal()
    m["spec"]["model"] = model
    m["spec"]["data"] = {
        "dataset": "fashion-mnist",
        "inputSize": [64],
        "augment": "crop-flip",
        "normalize": {"mean": [0.5], "std": [0.25]},
    }
    job = S.parse(m)
    assert S.parse(S.to_manifest(job)) == job
    assert S.model_argument(job.spec, tmp_path) == argument
    kwargs = S.compress_kwargs(job.spec, tmp_path)
    local = {k: str(tmp_path / v) if k in ("weights", "code_dir") and v else v for k, v in extra.items()}
    assert {k: kwargs[k] for k in extra} == local
    assert (kwargs["input_size"], kwargs["augment"], kwargs["mean"], kwargs["std"]) == (
        (64, 64),
        "crop-flip",
        [0.5],
        [0.25],
    )
    # the code's claim is mounted like the others
    assert set(S.claims(job.spec)) == {
        u.split("/")[2] for u in (model.get("uri"), model.get("codeUri"), "pvc://models/o") if u
    }


def test_the_crd_names_every_torchvision_architecture_kondense_builds():
    from kondense.zoo import torchvision_models

    assert CRD_SPEC["model"]["properties"]["torchvision"]["enum"] == sorted(torchvision_models.names())


def test_import_does_not_load_torch():
    code = (
        "import sys, kondense.job.spec as s; s.load(sys.argv[1]); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
