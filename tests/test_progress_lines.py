"""KONDENSE-PROGRESS lines: rank 0's machine-readable position in a stage, for the operator to read
from the pod's log. Their format (the keys of the CRD's status.progress), their throttling, where
they are printed at all, and what annealing and exploration report through them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from kondense import progress as progress_mod
from kondense.pipeline.distill import FineTune
from kondense.progress import PREFIX, Progress, StageProgress, lines_wanted, stage_progress
from tests.test_annealing import anneal_with

CRD = Path(__file__).resolve().parents[1] / "crds" / "compressionjob.yaml"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def records(stream: io.StringIO) -> list[dict]:
    lines = stream.getvalue().splitlines()
    assert all(line.startswith(PREFIX) for line in lines), lines
    return [json.loads(line[len(PREFIX) :]) for line in lines]


def progress_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["progress"]


def test_lines_carry_the_status_progress_fields_and_are_throttled_except_at_boundaries() -> None:
    clock, out = Clock(), io.StringIO()
    report = StageProgress(1, enabled=True, every_s=5.0, clock=clock, stream=out)
    report.update(step=0, steps=10, fraction=0.0, val_accuracy=91.25, compression=1.0, message="sensitivity scan")
    assert out.getvalue() == ""  # not a boundary: nothing yet
    report.update(boundary=True)
    report.count_batches(offset=0, planned=10)
    for done in range(1, 11):
        clock.t += 1.0  # one batch a second: lines at most every 5 s
        report.batches(done, 10)
    clock.t += 0.5
    report.update(val_accuracy=90.5, compression=3.0, message="attempt 1 fine-tuned", boundary=True)
    report.finish(val_accuracy=90.5, compression=3.0, message="done")
    got = records(out)
    # the first line, then one every 5 s (batches 5 and 10), then the boundary and the end
    assert [r.get("step") for r in got] == [0, 5, 10, 10, 10], got
    assert got[0] == {
        "stage": 1,
        "step": 0,
        "steps": 10,
        "percent": 0,
        "valAccuracy": 91.25,
        "compression": 1.0,
        "message": "sensitivity scan",
    }
    # the rate since the fine-tune began (the scan before it is no batch's): 5 s for half of them
    assert got[1]["percent"] == 50 and got[1]["etaSeconds"] == 5, got[1]
    assert got[2]["percent"] == 99 and got[2]["etaSeconds"] == 0  # the last batch is not the end
    assert got[3]["compression"] == 3.0 and got[3]["message"] == "attempt 1 fine-tuned"
    assert got[4] == {
        "stage": 1,
        "step": 10,
        "steps": 10,
        "percent": 100,
        "etaSeconds": 0,
        "valAccuracy": 90.5,
        "compression": 3.0,
        "message": "done",
    }
    schema = progress_schema()["properties"]
    types = {"integer": int, "number": (int, float), "string": str}
    for r in got:
        for key, value in r.items():
            assert key in schema and key != "updateTime", key  # updateTime is the operator's
            assert isinstance(value, types[schema[key]["type"]]), (key, value)
        assert 0 <= r["percent"] <= 100


def test_a_retried_attempt_counts_its_batches_but_percent_holds() -> None:
    """Stage 1 tries a smaller plan when the first misses the floor: work nobody planned. step and
    steps count it, etaSeconds says how long it takes, and percent stays where it was."""
    clock, out = Clock(), io.StringIO()
    report = StageProgress(1, enabled=True, every_s=0.0, clock=clock, stream=out)
    for attempt in (1, 2):
        report.count_batches(offset=(attempt - 1) * 4, planned=4)
        report.update(message=f"fine-tune, attempt {attempt}", boundary=True)
        for done in range(1, 5):
            clock.t += 1.0
            report.batches(done, 4)
    report.finish(message="done")
    got = records(out)
    assert [(r["step"], r["steps"]) for r in got] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)] + [
        (4, 8),
        (5, 8),
        (6, 8),
        (7, 8),
        (8, 8),
        (8, 8),
    ]
    assert [r["percent"] for r in got] == [0, 25, 50, 75, 99, 99, 99, 99, 99, 99, 100]
    assert [r.get("etaSeconds") for r in got[5:]] == [None, 3, 2, 1, 0, 0]  # attempt 2's own rate


def test_annealing_without_caps_reports_steps_but_no_percent() -> None:
    out = io.StringIO()
    report = StageProgress(2, enabled=True, every_s=0.0, clock=Clock(), stream=out)
    report.within_step(3, None)
    report.batches(5, 10)
    got = records(out)
    assert got == [{"stage": 2, "step": 3, "message": "step 4"}] * 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KONDENSE_PROGRESS_LINES": "1"}, True),
        ({"KONDENSE_PROGRESS_LINES": "1", "RANK": "1"}, False),
        ({"KONDENSE_PROGRESS_LINES": "1", "OMPI_COMM_WORLD_RANK": "0"}, True),
        ({}, False),
        ({"KONDENSE_PROGRESS_LINES": "0"}, False),
    ],
)
def test_only_rank_0_of_a_pod_prints_lines(monkeypatch, capsys, env, expected) -> None:
    for name in ("KONDENSE_PROGRESS_LINES", "RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert lines_wanted() is expected
    StageProgress(1).update(step=0, steps=4, fraction=0.0, boundary=True)
    assert (PREFIX in capsys.readouterr().out) is expected


def test_fine_tune_batches_feed_the_open_stage_and_other_loops_do_not() -> None:
    out = io.StringIO()
    with stage_progress(1, enabled=True, every_s=0.0, clock=Clock(), stream=out) as report:
        report.count_batches(offset=0, planned=4)
        report.update(boundary=True)  # the stage's first line: from then on every batch may add one
        teacher = Progress(7, "teacher logits")  # not the stage's work
        for _ in range(7):
            teacher.update()
        assert len(out.getvalue().splitlines()) == 1
        tune = Progress(4, "stage 1 fine-tune", stage=True)
        for _ in range(4):
            tune.update()
    assert [r["step"] for r in records(out)] == [0, 1, 2, 3, 4]
    assert progress_mod._active is None  # closed with the stage
    Progress(3, "after the stage", stage=True).update()  # nothing open: nothing fed, nothing fails


class BatchingFineTune(FineTune):
    """A fine-tune that only walks its batches through Progress, as the real loop does."""

    def run(self, model, data, epochs, seed, description="", comm=None) -> int:
        steps = self.steps(len(data), epochs)
        progress = Progress(steps, description, stage=True)
        for _ in range(steps):
            progress.update()
        return self.samples(len(data), epochs)


def anneal_lines(tmp_path: Path, monkeypatch, vals: list[float], **budget) -> list[dict]:
    monkeypatch.setenv("KONDENSE_PROGRESS_LINES", "1")
    out = io.StringIO()
    monkeypatch.setattr(progress_mod.sys, "stdout", out)
    monkeypatch.setattr(progress_mod, "EVERY_S", 0.0)
    anneal_with(tmp_path, vals, BatchingFineTune(batch_size=10), **budget)
    return records(out)


def test_annealing_percent_climbs_through_its_step_cap_and_ends_at_100(tmp_path, monkeypatch) -> None:
    # step 1 kept; step 2 just below the floor (89.0): fine-tuned twice, then kept; step 3 kept
    got = anneal_lines(tmp_path, monkeypatch, [89.5, 88.7, 89.2, 89.4], max_steps=3)
    assert {r["stage"] for r in got} == {2} and all(r["steps"] == 3 for r in got)
    percents = [r["percent"] for r in got]
    assert percents == sorted(percents), percents  # the second fine-tune of step 2 did not move it back
    assert percents[0] == 0 and percents[-1] == 100 and len(set(percents)) > 4, percents
    ends = [(r["step"], r["percent"], r["message"]) for r in got if " kept" in r["message"]]
    assert ends == [
        (1, 33, "step 1 kept (val acc 89.50%)"),
        (2, 66, "step 2 kept (val acc 89.20%)"),
        (3, 99, "step 3 kept (val acc 89.40%)"),
    ]
    starts = {r["step"]: r["message"] for r in got if "at most" in r["message"]}
    assert starts == {0: "step 1 of at most 3", 1: "step 2 of at most 3", 2: "step 3 of at most 3"}
    assert got[-1]["valAccuracy"] == 89.4 and got[-1]["compression"] > 1.0


def test_the_sample_cap_sets_steps_where_there_is_no_step_cap(tmp_path, monkeypatch) -> None:
    # 100 samples per step: 250 leaves room for two steps
    got = anneal_lines(tmp_path, monkeypatch, [89.5] * 5, max_samples=250)
    assert {r["steps"] for r in got} == {2}
    assert got[-1]["percent"] == 100 and got[-1]["step"] == 2
