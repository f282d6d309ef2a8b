"""benchmarks/search_overhead.py end to end on the zoo's narrow ResNet-18: the record it writes holds every
scan trial of the model, timed, so that the benchmark keeps running as the engine it measures changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from kondense import zoo
from kondense.pipeline.conductor import _Trials

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "search_overhead.py"


def test_search_overhead_times_every_scan_trial(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--archs", "resnet18_narrow", "--repeats", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    result = record["results"]["resnet18_narrow"]
    candidates = _Trials(
        zoo.build("resnet18_narrow", 10, 1).eval(), torch.zeros(2, 1, 28, 28), "params", set()
    ).candidates
    assert result["trials"] == 4 * len(candidates)  # every candidate at the zoo benchmarks' four ratios
    assert set(result["trialCopyMs"]) == {t for _, t in candidates} == {"prune", "lowrank"}
    assert 0 < result["momentsSeconds"] < result["estimatesSeconds"]
    assert all(ms > 0 for ms in result["trialCopyMs"].values()) and result["scanSeconds"] > 0
    assert record["arguments"] == {"archs": ["resnet18_narrow"], "repeats": 1, "device": "cpu"}
