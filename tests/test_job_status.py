"""kondense.job.status: the CompressionJob's status, the same from `kondense run` and the operator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from kondense.job import spec as spec_mod
from kondense.job import status as st
from kondense.job.schema import CRD_FILE

CRD = yaml.safe_load(CRD_FILE.read_text())
STATUS_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
SIX = {"accuracy": 90.0, "sizeMB": 1.0, "macsG": 0.1, "paramsM": 0.2, "memoryMB": 2.0, "latencyMs": 0.5}


def report(stage: int) -> dict:
    """A report as kondense.measure.report writes it after `stage`."""
    out = {
        "original": SIX,
        "stage1": {**SIX, "sizeMB": 0.5},
        "trainingSamples": 100,
        "enhancement": {
            "accuracyDrop": 0.5 * stage,
            "size": 2.0 * stage,
            "macs": 2.0,
            "params": 3.0,
            "memory": 1.5,
            "latency": 1.2,
        },
    }
    if stage == 2:
        out["stage2"] = {**SIX, "sizeMB": 0.25}
    return out


def job_spec(**spec) -> spec_mod.JobSpec:
    manifest = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "j"},
        "spec": {
            "model": {"zoo": "resnet18"},
            "data": {"dataset": "fashion-mnist"},
            "delta": 1.0,
            "output": {"uri": "pvc://models/out"},
            **spec,
        },
    }
    return spec_mod.parse(manifest).spec


def types(status: dict) -> dict[str, str]:
    """Each condition's status by type; a type listed twice fails (metav1: one entry per type)."""
    found = {c["type"]: c["status"] for c in status["conditions"]}
    assert len(found) == len(status["conditions"]), status["conditions"]
    return found


def test_only_the_standard_library():
    """The operator imports it: no torch, and nothing else to install either."""
    code = (
        "import json, sys, kondense.job; before = set(sys.modules); import kondense.job.status; "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))); "
        "assert 'torch' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["kondense"]


def test_phases_are_the_crds():
    assert list(st.PHASES) == STATUS_SCHEMA["properties"]["phase"]["enum"]
    assert set(st.TERMINAL) <= set(st.PHASES)


def test_one_condition_per_type_and_transitions_only_on_flips():
    conds = st.set_condition([], "Created", True, "Created", "ok", 1)
    conds = st.set_condition(conds, "Running", True, "Stage1Running", "one", 1)
    conds[1]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    conds = st.set_condition(conds, "Running", True, "Stage2Running", "two", 2)
    assert [c["type"] for c in conds] == ["Created", "Running"]
    assert conds[1]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    assert (conds[1]["reason"], conds[1]["message"], conds[1]["observedGeneration"]) == ("Stage2Running", "two", 2)
    flipped = st.set_condition(conds, "Running", False, "Completed", "done", 2)
    assert flipped[1]["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    assert conds[1]["status"] == "True", "the list passed in is not changed"
    assert st.condition(flipped, "Running")["status"] == "False" and st.condition(flipped, "Failed") is None


def test_two_stages_to_succeeded():
    spec = job_spec(workers=2, backend="torch")
    status = st.accepted(spec)
    assert status["phase"] == st.PENDING and status["stage"] == 1 and status["startTime"]
    assert status["conditions"][0]["message"] == "accepted: stage 2 on 2 worker(s) x 1 torch process(es)"
    for stage in (1, 2):
        status = st.running(status, stage, spec, 1)
        assert (status["phase"], status["stage"], status["reason"]) == (st.RUNNING, stage, f"Stage{stage}Running")
        status = st.apply_summary(status, st.stage_summary(report(stage), stage, "pvc://models/out/"))
    status = st.succeeded(status, 1)
    assert types(status) == {"Created": "True", "Running": "False", "Succeeded": "True"}
    assert status["message"] == "compressed 3.0x (params), 4.0x (size) at 1.00 points"
    assert set(status["metrics"]) == {"original", "stage1", "stage2", "enhancement"}
    assert status["artifacts"]["model"] == "pvc://models/out/model.pt" and status["trainingSamples"] == 100
    jsonschema.validate(status, STATUS_SCHEMA)


def test_failed_and_suspended():
    spec = job_spec()
    status = st.failed(st.running(st.accepted(spec), 1, spec, 1), "WorkerError", "stage 1: boom", 1)
    assert (status["phase"], status["reason"], status["message"]) == (st.FAILED, "WorkerError", "stage 1: boom")
    assert types(status) == {"Created": "True", "Running": "False", "Failed": "True"}
    assert st.condition(status["conditions"], "Failed")["message"] == "stage 1: boom"
    jsonschema.validate(status, STATUS_SCHEMA)
    invalid = st.failed({}, "InvalidSpec", "spec.delta: must be positive", 1)
    assert invalid["startTime"] == invalid["completionTime"] and types(invalid) == {"Failed": "True"}
    suspended = {"conditions": st.set_condition([], "Suspended", True, "Suspended", "paused", 1)}
    assert types(st.succeeded(suspended, 2)) == {"Suspended": "False", "Running": "False", "Succeeded": "True"}


def test_summary_round_trip_within_the_kubelets_limit():
    summary = st.stage_summary({**report(1), "original": {**SIX, "accuracy": 90.123456789}}, 1, "pvc://m/out")
    text = st.summary_text(summary)
    assert "," in text and ", " not in text
    assert st.parse_summary(text) == {
        **summary,
        "metrics": {**summary["metrics"], "original": {**SIX, "accuracy": 90.12346}},
    }
    error = st.error_summary(2, "x" * 5000)
    assert len(error["error"]) == st.ERROR_LIMIT and len(st.summary_text(error).encode()) <= st.TERMINATION_LIMIT
    huge = {**summary, "metrics": {f"m{i}": SIX for i in range(100)}}
    assert st.parse_summary(st.summary_text(huge)) == {"stage": 1, "truncated": True}
    for not_a_summary in ("Traceback (most recent call last):\nValueError: x", "[1, 2]", "", None):
        assert st.parse_summary(not_a_summary) is None


def test_one_wording_of_the_result():
    summary = st.stage_summary(report(1), 1, "pvc://m/out")
    assert st.stage_message(1, summary) == "stage 1 succeeded: 3.0x (params), 2.0x (size) at 0.50 points"
    assert st.stage_message(1, {"stage": 1, "truncated": True}) == "stage 1 succeeded"
    assert st.success_message({"metrics": {"enhancement": {"params": 3}}}) == "all stages succeeded"


@pytest.mark.parametrize("fails", [False, True])
def test_run_job_writes_the_operators_status_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool):
    """`kondense run` with the launcher played: status.json has one condition per type, as on a cluster."""
    from kondense.launch import stages, worker

    def launch_local(workers, slots, backend, command, port=None, *, env=None):
        stage = int(command[command.index("--stage") + 1])
        message = Path(env["KONDENSE_TERMINATION_LOG"])
        message.parent.mkdir(parents=True, exist_ok=True)
        failing = fails and stage == 2
        summary = (
            st.error_summary(stage, "out of data")
            if failing
            else st.stage_summary(report(stage), stage, "pvc://models/out")
        )
        message.write_text(st.summary_text(summary))
        return 1 if failing else 0

    monkeypatch.setattr(worker, "launch_local", launch_local)
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kondense.dev/v1alpha1",
                "kind": "CompressionJob",
                "metadata": {"name": "local"},
                "spec": {
                    "model": {"zoo": "resnet18"},
                    "data": {"dataset": "fashion-mnist"},
                    "delta": 1.0,
                    "stage": 2,
                    "output": {"uri": "pvc://models/out"},
                },
            }
        )
    )
    status = stages.run_job(manifest, tmp_path / "pvc")
    assert json.loads((tmp_path / "pvc" / "models" / "out" / "status.json").read_text()) == status
    assert status["stage"] == 2
    if fails:
        assert (status["phase"], status["reason"], status["message"]) == (
            st.FAILED,
            "WorkerError",
            "stage 2: out of data",
        )
        assert types(status) == {"Created": "True", "Running": "False", "Failed": "True"}
    else:
        assert status["phase"] == st.SUCCEEDED and status["message"].startswith("compressed 3.0x (params)")
        assert types(status) == {"Created": "True", "Running": "False", "Succeeded": "True"}
        assert set(status["metrics"]) == {"original", "stage1", "stage2", "enhancement"}
    jsonschema.validate(status, STATUS_SCHEMA)


def test_the_onnx_artifact_is_named_only_where_it_was_written():
    kept = {**report(2), "onnx": {"file": "model.onnx", "opset": 20}}
    refused = {**report(2), "onnx": {"file": None, "error": "the ONNX export does not compute what ..."}}
    assert st.stage_summary(kept, 2, "pvc://m/out")["artifacts"]["onnx"] == "pvc://m/out/model.onnx"
    assert "onnx" not in st.stage_summary(refused, 2, "pvc://m/out")["artifacts"]
    assert "onnx" not in st.stage_summary(report(2), 2, "pvc://m/out")["artifacts"]


def report3(kept: bool) -> dict:
    """A stage 3 run's report: stage 2's, then the INT8 model's column where it was kept (and the enhancement
    measured against it), else int8.error."""
    out = {**report(2), "stage": 3}
    if kept:
        out["stage3"] = {**SIX, "sizeMB": 0.0625, "accuracy": 89.5}
        out["enhancement"] = {**out["enhancement"], "size": 16.0, "accuracyDrop": 0.5}
        out["int8"] = {"file": "model.int8.onnx", "testAccuracy": 89.5}
    else:
        out["int8"] = {"file": None, "error": "the INT8 model's validation accuracy 80.00% is below the floor"}
    return out


def printer_column(status: dict, name: str):
    """What `kubectl get cpj` shows in column `name`: its jsonPath read off the object."""
    (path,) = [c["jsonPath"] for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"] if c["name"] == name]
    value = {"status": status}
    for key in path.strip(".").split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


@pytest.mark.parametrize("kept", [True, False])
def test_stage_3_is_the_tail_of_stage_2_and_its_metrics_reach_the_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: bool
):
    """`kondense run` of a stage 3 manifest: two stage processes (stage 3 runs at the end of the second),
    metrics.stage3 where the INT8 model was kept, status.stage 3, `kubectl get cpj` showing its size ratio."""
    from kondense.launch import stages, worker

    launched = []

    def launch_local(workers, slots, backend, command, port=None, *, env=None):
        stage = int(command[command.index("--stage") + 1])
        launched.append(stage)
        message = Path(env["KONDENSE_TERMINATION_LOG"])
        message.parent.mkdir(parents=True, exist_ok=True)
        done = report3(kept) if stage == 2 else report(1)
        message.write_text(st.summary_text(st.stage_summary(done, stage, "pvc://models/out")))
        return 0

    monkeypatch.setattr(worker, "launch_local", launch_local)
    manifest = tmp_path / "job.yaml"
    spec = {"model": {"zoo": "resnet18"}, "data": {"dataset": "fashion-mnist"}, "delta": 1.0, "stage": 3}
    document = {"apiVersion": "kondense.dev/v1alpha1", "kind": "CompressionJob", "metadata": {"name": "q"}}
    manifest.write_text(yaml.safe_dump({**document, "spec": {**spec, "output": {"uri": "pvc://models/out"}}}))
    status = stages.run_job(manifest, tmp_path / "pvc")
    assert launched == [1, 2], "no process of its own for stage 3"
    assert (status["phase"], status["stage"]) == (st.SUCCEEDED, 3)
    assert printer_column(status, "Stage") == 3
    if kept:
        assert set(status["metrics"]) == {"original", "stage1", "stage2", "stage3", "enhancement"}
        assert status["metrics"]["stage3"]["sizeMB"] == 0.0625
        assert status["artifacts"]["int8"] == "pvc://models/out/model.int8.onnx"
        assert printer_column(status, "Size x") == 16.0 and printer_column(status, "Acc drop") == 0.5
        assert status["message"] == "compressed 3.0x (params), 16.0x (size) at 0.50 points"
    else:
        assert "stage3" not in status["metrics"] and "int8" not in status["artifacts"]
        assert printer_column(status, "Size x") == 4.0, "the last stage that produced a model: stage 2"
        assert status["message"].endswith("(stage 3 kept no INT8 model: see report.md)")
    jsonschema.validate(status, STATUS_SCHEMA)


def test_stage_3_summary_and_messages():
    kept = st.stage_summary(report3(True), 2, "pvc://m/out")
    assert kept["metrics"]["stage3"]["sizeMB"] == 0.0625 and kept["stage3"] == "kept"
    assert st.stage_message(2, kept) == "stages 2 and 3 succeeded: 3.0x (params), 16.0x (size) at 0.50 points"
    refused = st.stage_summary(report3(False), 2, "pvc://m/out")
    assert "stage3" not in refused["metrics"] and refused["stage3"].startswith("the INT8 model's validation accuracy")
    assert st.stage_message(2, refused).endswith("; stage 3 kept no INT8 model: " + refused["stage3"])
    assert "stage3" not in st.stage_summary(report(2), 2, "pvc://m/out"), "stage 2 runs say nothing of stage 3"
    long = {**report3(False), "int8": {"error": "x" * 10_000}}
    assert len(st.summary_text(st.stage_summary(long, 2, "pvc://m/out"))) <= st.TERMINATION_LIMIT
    spec = job_spec(stage=3)
    assert st.running({}, 2, spec, 1)["message"].startswith("stage 2 (then stage 3, INT8, in the same processes)")
    assert st.running({}, 1, spec, 1)["message"].startswith("stage 1 running")
