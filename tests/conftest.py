from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# The end-to-end layer: modules that start processes (ranks, the CLI, the operator against the
# API emulator) or compress a network from end to end. Everything else is the fast unit layer
# (`make test-fast`, seconds); `make test` runs both.
E2E_MODULES = {
    "test_cli.py",
    "test_compress.py",
    "test_distributed.py",
    "test_distributed_engine.py",
    "test_own_models.py",
    "test_latency_objective.py",
    "operator/test_operator.py",
    "operator/test_pod_template.py",
    "operator/test_restart.py",
}
TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end (processes, the operator, whole compressions); make test-e2e")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one); pytest -m gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(TESTS).as_posix() in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def bundle():
    """A few thousand Fashion-MNIST samples (tests.tinynet.small_data), once per module that asks."""
    from .tinynet import small_data

    return small_data()


@pytest.fixture(scope="module")
def tiny(bundle):
    """The tiny CNN trained on `bundle` (tests.tinynet.trained_tiny), once per module that asks."""
    from .tinynet import trained_tiny

    return trained_tiny(bundle)


@pytest.fixture(autouse=True)
def kondense_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own weight cache, so none reads or clobbers the user's."""
    home = tmp_path / "kondense-home"
    monkeypatch.setenv("KONDENSE_HOME", str(home))
    return home


def run_cli(*args: str, check: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
    """The `kondense` command as a user runs it, in a separate process."""
    result = subprocess.run(
        [sys.executable, "-m", "kondense.cli", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kondense {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def train_quick_zoo(out: Path, *, epochs: int = 1, train: int = 512, val: int = 64, test: int = 64) -> Path:
    """A mobilenet_v1 trained for seconds on a subset of Fashion-MNIST, by the `kondense zoo train`
    command, saved at `out` (a zoo weights file: it names its own architecture)."""
    samples = {"--train-samples": train, "--val-samples": val, "--test-samples": test}
    flags = [str(x) for pair in samples.items() for x in pair]
    run_cli("zoo", "train", "mobilenet_v1", "--dataset", "fashion-mnist", "--epochs", str(epochs), *flags,
            "--out", str(out), check=True)  # fmt: skip
    return out


def missing_module(module: str, hint: str) -> str | None:
    """Why `module` does not import in a fresh interpreter (as the ranks would import it), or None."""
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"{module} does not import ({probe.stderr.strip()[-200:]}); {hint}"


def _mpi_missing() -> str | None:
    import shutil

    if shutil.which("mpirun") is None:
        return "mpirun is not on PATH; make install installs Open MPI (scripts/install-mpi.sh)"
    return missing_module("mpi4py.MPI", "make install installs it (the mpi extra)")


def backend_params() -> list:
    """Every spec backend as a pytest parameter; horovod and mpi skipped, with the reason, where not installed."""
    horovod = missing_module("horovod.torch", "make install builds it (scripts/build-horovod.sh)")
    mpi = _mpi_missing()
    return [
        pytest.param("torch"),
        pytest.param("horovod", marks=pytest.mark.skipif(horovod is not None, reason=horovod or "")),
        pytest.param("mpi", marks=pytest.mark.skipif(mpi is not None, reason=mpi or "")),
    ]
