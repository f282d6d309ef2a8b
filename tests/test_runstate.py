"""A run directory resumes only under the settings it was started with."""

from __future__ import annotations

from pathlib import Path

import pytest

from kondense.errors import KondenseError
from kondense.pipeline.runstate import RunDir


def started(path: Path, fingerprint: dict) -> None:
    run = RunDir(path, fingerprint)
    run.state["stage1"] = {"checkpoint": "stage1.pt", "valAccuracy": 90.0}
    run.save()


def test_a_setting_added_later_at_none_matches_its_absence(tmp_path: Path) -> None:
    """A run written before Budget.screen existed resumes under a version that has it, off."""
    started(tmp_path, {"delta": 1.0, "budget": {"max_steps": None, "ratios": [0.5]}})
    run = RunDir(tmp_path, {"delta": 1.0, "budget": {"max_steps": None, "ratios": [0.5], "screen": None}})
    assert run.resumed and run.state["stage1"]["valAccuracy"] == 90.0


@pytest.mark.parametrize(
    "now",
    [
        {"delta": 1.0, "budget": {"max_steps": None, "ratios": [0.5], "screen": 2}},  # added, and on
        {"delta": 1.0, "budget": {"max_steps": 3, "ratios": [0.5]}},  # changed
        {"delta": 1.0, "budget": {"ratios": [0.5]}},  # removed
        {"delta": 2.0, "budget": {"max_steps": None, "ratios": [0.5]}},
    ],
)
def test_other_settings_are_refused_and_named(tmp_path: Path, now: dict) -> None:
    started(tmp_path, {"delta": 1.0, "budget": {"max_steps": None, "ratios": [0.5]}})
    with pytest.raises(KondenseError, match="holds a run with other settings") as refused:
        RunDir(tmp_path, now)
    assert "use another --out directory" in str(refused.value)
