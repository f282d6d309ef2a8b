from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def kondense_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own weight cache, so none reads or clobbers the user's."""
    home = tmp_path / "kondense-home"
    monkeypatch.setenv("KONDENSE_HOME", str(home))
    return home


def run_cli(*args: str, check: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
    """The `kondense` command as a user runs it, in a separate process."""
    result = subprocess.run([sys.executable, "-m", "kondense.cli", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"kondense {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
