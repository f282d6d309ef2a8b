"""benchmarks/peers.py end to end on a LeNet-5 trained for seconds: the JSON it writes holds real,
mutually consistent numbers (pruned models really smaller, ratios found by the search, accuracies in range)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from kondense.zoo.training import train_zoo

PEERS = Path(__file__).parent.parent / "benchmarks" / "peers.py"


def _peers():
    spec = importlib.util.spec_from_file_location("peers", PEERS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("peers") / "lenet5.pt"
    train_zoo("lenet5", "fashion-mnist", epochs=1, train_samples=1024, val_samples=64, test_samples=64, out=out)
    return out


def test_peers_writes_consistent_results(original: Path, tmp_path: Path) -> None:
    peers = _peers()
    out = tmp_path / "peers.json"
    result = peers.main(
        [
            "--model", str(original), "--data", "fashion-mnist", "--delta", "100",
            "--train-samples", "256", "--val-samples", "256", "--samples", "256",
            "--methods", "taylor-kd", "aimet", "--max-ratio", "4", "--at-ratio", "4",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["arch"] == "lenet5" and result["trainSamples"] == 256 and result["samples"] == 256
    assert result["device"] == "cpu"
    o = result["original"]
    assert o["testImages"] == 10000  # the whole test split, always
    assert 0 <= o["testAccuracy"] <= 100 and o["paramsM"] > 0 and o["macsG"] > 0

    by_name = {m["method"]: m for m in result["methods"]}
    assert set(by_name) == {"taylor-kd", "aimet"}
    assert "skipped" in by_name["aimet"] or "trials" in by_name["aimet"]  # skipped unless AIMET is importable
    m = by_name["taylor-kd"]
    trials = m["trials"]
    # delta 100 passes everything: the ladder climbs 2x, 4x and stops at --max-ratio; --at-ratio reuses 4x
    assert [t["ratio"] for t in trials] == [2.0, 4.0]
    for t in trials:
        assert t["withinDelta"] is True
        assert abs(t["paramsRatio"] / t["ratio"] - 1) < 0.1  # the pruned model really has that many fewer params
        assert t["macsRatio"] > 1
        assert 0 <= t["valAccuracy"] <= 100 and 0 <= t["testAccuracy"] <= 100
        assert t["samples"] == 256 + 256 and t["seconds"] > 0  # the fine-tune's, and the Taylor gradients' 2 batches
    best = max(trials, key=lambda t: t["paramsRatio"])
    assert m["bestRatio"] == best["paramsRatio"] > 3.5
    assert m["testAccuracyAtBest"] == best["testAccuracy"] and m["macsRatioAtBest"] == best["macsRatio"]
    assert m["atRatio"] == {"ratio": trials[1]["paramsRatio"], "testAccuracy": trials[1]["testAccuracy"]}


def test_no_best_ratio_when_nothing_stays_within_delta(original: Path, tmp_path: Path) -> None:
    """A negative delta of 100 points no model meets: the start fails, halving it leaves no ratio to try."""
    peers = _peers()
    result = peers.main(
        [
            "--model", str(original), "--delta", "-100", "--train-samples", "128", "--val-samples", "128",
            "--samples", "128", "--methods", "uniform-ce", "--start-ratio", "2", "--out", str(tmp_path / "p.json"),
        ]
    )  # fmt: skip
    m = result["methods"][0]
    assert m["bestRatio"] is None and m["testAccuracyAtBest"] is None
    assert [(t["ratio"], t["withinDelta"]) for t in m["trials"]] == [(2.0, False)]


@pytest.mark.skipif(
    not os.environ.get("KONDENSE_AIMET_PATH"), reason="AIMET lives apart from the venv: set KONDENSE_AIMET_PATH=DIR"
)
def test_aimet_trial(original: Path, tmp_path: Path) -> None:
    """AIMET's spatial SVD + channel pruning, where it is installed: LeNet-5's convolutions hold 4% of its
    parameters (the rest is Linear, which AIMET does not prune), so only a small ratio is reachable."""
    peers = _peers()
    result = peers.main(
        [
            "--model", str(original), "--delta", "100", "--train-samples", "256", "--val-samples", "256",
            "--samples", "256", "--methods", "aimet", "--aimet-path", os.environ["KONDENSE_AIMET_PATH"],
            "--start-ratio", "1.03", "--max-ratio", "1.03", "--out", str(tmp_path / "p.json"),
        ]
    )  # fmt: skip
    (trial,) = result["methods"][0]["trials"]
    assert abs(trial["paramsRatio"] / 1.03 - 1) < 0.1 and trial["macsRatio"] > 1
    assert trial["samples"] > 256  # the reconstruction's samples are counted too
    assert result["methods"][0]["bestRatio"] == trial["paramsRatio"]


def test_demo_table_sets_kondense_beside_the_peers_and_marks_test_drops_over_delta() -> None:
    """Each row's drop is against the original it compressed: the recorded peers ran on an earlier training
    (91.52%) than the demo's (91.25%), and their 90.36% is 1.16 points below theirs, over delta."""
    spec = importlib.util.spec_from_file_location("demo_table", PEERS.parent / "demo_table.py")
    demo_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo_table)
    stage = {"accuracy": 90.79}
    report = {"original": {"accuracy": 91.25}, "stage2": stage, "stage1": stage, "delta": 1.0, "trainingSamples": 49920}
    report["enhancement"] = {"params": 9.03, "macs": 3.57}
    peers = {
        "original": {"testAccuracy": 91.52},
        "methods": [
            {
                "method": "uniform-ce",
                "bestRatio": 8.14,
                "macsRatioAtBest": 8.71,
                "testAccuracyAtBest": 90.36,
                "samples": 49920,
            },
            {"method": "scratch", "bestRatio": None, "samples": 49920},
            {"method": "aimet", "skipped": "aimet_torch does not import"},
        ],
    }
    trial = {"paramsRatio": 9.1, "macsRatio": 9.6, "testAccuracy": 89.95, "samples": 49920, "withinDelta": False}
    live = {"original": {"testAccuracy": 91.25}, "methods": [{"method": "uniform-kd", "trials": [trial]}]}
    rows = demo_table.rows(report, peers, live)
    assert [r.method for r in rows] == [
        "kondense",
        "uniform-kd at kondense's ratio (val: over delta)",
        "uniform-ce (recorded)",
        "scratch (none within delta)",
        "aimet (skipped: not installed)",
    ]
    assert (rows[0].params, rows[0].macs, rows[0].accuracy, rows[0].original) == (9.03, 3.57, 90.79, 91.25)
    assert (rows[1].params, rows[1].accuracy, rows[1].original) == (9.1, 89.95, 91.25)
    assert rows[2].original == 91.52
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(demo_table.table(report, peers, live))
    text = console.export_text()
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 2}
    assert "+0.46 " in lines["kondense"] and "over delta" not in lines["kondense"]
    assert "+1.30 (over delta)" in lines["uniform-kd at kondense's ratio (val: over delta)"]
    assert "+1.16 (over delta)" in lines["uniform-ce (recorded)"] and "91.52%" in lines["uniform-ce (recorded)"]
    # without the live peer, the table is the report and the record
    assert [r.method for r in demo_table.rows(report, peers)][:2] == ["kondense", "uniform-ce (recorded)"]
