"""The CUDA paths: a compression on the GPU with its outputs loaded back on the CPU, and the torch
backend's NCCL transport under the launcher pods use. Skipped (with the reason) where torch sees no
GPU, as in CI; `pytest -m gpu` on a machine with one, and benchmarks/gpu.sh runs them first."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kondense
from kondense import Budget, FineTune
from kondense.launch.worker import launch_local
from kondense.measure.profile import accuracy, latency_ms

from .tinynet import TinyNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"),
]
ROOT = Path(__file__).resolve().parent.parent
DELTA = 3.0
BUDGET = dict(ratios=(0.5, 0.25), stage1_epochs=2, step_epochs=1, max_steps=2, scan_samples=300, recal_samples=256)


@pytest.fixture(scope="module")
def on_cuda(tiny, bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda")
    return kondense.compress(
        tiny,
        bundle,
        delta=DELTA,
        stage=2,
        out=out,
        device="cuda",
        finetune=FineTune(batch_size=64),
        budget=Budget(**BUDGET),
        quantize="int8",
    )


def test_compression_on_cuda_stays_within_delta(on_cuda) -> None:
    r = on_cuda.report
    assert r["validation"]["original"] - r["validation"]["stage2"] <= DELTA
    assert r["original"]["paramsM"] > r["stage1"]["paramsM"] >= r["stage2"]["paramsM"]
    assert r["trainingSamples"] > 0


def test_cuda_outputs_load_on_the_cpu_and_reproduce_the_report(on_cuda, bundle) -> None:
    """What a GPU job writes must deploy where there is none: every file loads with map_location cpu."""
    test_loader = bundle.loaders()[2]
    reported = on_cuda.report["stage2"]["accuracy"]
    rebuilt = kondense.load_compressed(on_cuda.out / "model.pt", base_model=TinyNet())
    assert {p.device.type for p in rebuilt.parameters()} == {"cpu"}
    # the CPU's and the GPU's kernels round differently: a few of 2000 predictions may flip
    assert accuracy(rebuilt, test_loader) == pytest.approx(reported, abs=0.3)
    scripted = torch.jit.load(str(on_cuda.out / "model.ts"), map_location="cpu")
    assert accuracy(scripted, test_loader) == pytest.approx(reported, abs=0.3)
    onnx = on_cuda.report["onnx"]
    assert onnx["parity"]["passed"], onnx
    int8 = on_cuda.report["int8"]
    assert int8["file"] == "model.int8.onnx" or "below the floor" in int8.get("error", ""), int8


def test_latency_on_cuda_waits_for_the_gpu(tiny) -> None:
    model = TinyNet().cuda().eval()
    model.load_state_dict(tiny.state_dict())
    ms = latency_ms(model, (1, 28, 28), batch_size=32)
    assert 0 < ms < 50, ms


def _launch(workers: int, command: list[str], caplog: pytest.LogCaptureFixture, **env: str) -> int:
    caplog.set_level(logging.INFO, logger="kondense")
    return launch_local(workers, 1, "torch", command, env={"KONDENSE_TIMEOUT": "120", **env})


def test_collectives_over_nccl(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every Comm operation with CUDA tensors: NCCL carries them, gloo the objects. Two ranks need two GPUs
    (NCCL refuses two ranks on one device); with one, a single rank still builds the NCCL communicator."""
    size = min(2, torch.cuda.device_count())
    script = [sys.executable, str(ROOT / "tests" / "dist_scripts" / "check_comm.py"), "torch", str(tmp_path)]
    assert _launch(size, [*script, "--device", "cuda"], caplog) == 0, "\n".join(caplog.messages[-30:])
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(size)]
    assert [r["device"] for r in results] == [f"cuda:{r}" for r in range(size)]
    assert all(r["allreduce"] == [sum(range(size)), size] for r in results)
    assert all(r["object"] == {"plan": [1, 2, 3], "from": 0} for r in results)
    assert all(r["broadcast_state"] == results[0]["broadcast_state"] for r in results)
    assert all(r["params_wrapped"] == results[0]["params_wrapped"] for r in results)
    assert all(r["max_diff_to_full_batch"] < 1e-5 for r in results)


def test_engine_over_nccl(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The engine's ranks under the pods' launcher, on the GPU, through torch.distributed."""
    size = min(2, torch.cuda.device_count())
    script = [sys.executable, str(ROOT / "tests" / "dist_compress_rank.py"), str(tmp_path)]
    assert _launch(size, script, caplog, KONDENSE_TEST_DEVICE="cuda") == 0, "\n".join(caplog.messages[-30:])
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(size)]
    assert all(r["steps"] == ranks[0]["steps"] and r["checksum"] == ranks[0]["checksum"] for r in ranks)
    report = ranks[0]["report"]
    assert report["validation"]["original"] - report["validation"]["stage2"] <= DELTA
    assert report["stage2"]["paramsM"] < report["original"]["paramsM"]


def test_cli_compress_on_cuda(tmp_path: Path) -> None:
    """`kondense zoo train` in bf16 and `kondense compress --device cuda`, as a user types them."""
    weights = tmp_path / "lenet5.pt"
    common = ["--train-samples", "512", "--val-samples", "256", "--test-samples", "256", "--device", "cuda"]
    train = [sys.executable, "-m", "kondense.cli", "zoo", "train", "lenet5", "--dataset", "fashion-mnist"]
    subprocess.run([*train, "--epochs", "1", "--precision", "bf16", "--out", str(weights), *common], check=True)
    compress = [sys.executable, "-m", "kondense.cli", "compress", "--model", str(weights), "--data", "fashion-mnist"]
    flags = ["--delta", "5", "--stage", "2", "--max-steps", "1", "--scan-samples", "128", "--json"]
    done = subprocess.run(
        [*compress, *flags, "--out", str(tmp_path / "out"), *common], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["stage2"]["paramsM"] <= report["original"]["paramsM"]


def test_peers_on_cuda(tmp_path: Path) -> None:
    """benchmarks/peers.py --device cuda, the way benchmarks/gpu.sh --peers runs it: every method that
    trains on the device (magnitude, Taylor gradients, from scratch) reaches its ratio there."""
    weights = tmp_path / "lenet5.pt"
    train = [sys.executable, "-m", "kondense.cli", "zoo", "train", "lenet5", "--dataset", "fashion-mnist"]
    common = ["--train-samples", "512", "--val-samples", "256", "--test-samples", "256"]
    subprocess.run([*train, "--epochs", "1", "--device", "cuda", "--out", str(weights), *common], check=True)
    out = tmp_path / "peers.json"
    peers = [sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--model", str(weights), "--data", "fashion-mnist"]
    flags = ["--delta", "100", "--train-samples", "256", "--val-samples", "256", "--samples", "256", "--max-ratio", "4"]
    methods = ["--methods", "uniform-kd", "taylor-ce", "scratch"]
    done = subprocess.run(
        [*peers, *flags, *methods, "--device", "cuda", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"].startswith("cuda")
    for method in result["methods"]:
        assert [t["ratio"] for t in method["trials"]] == [2.0, 4.0], method  # delta 100: every rung passes
        assert all(abs(t["paramsRatio"] / t["ratio"] - 1) < 0.1 for t in method["trials"]), method
