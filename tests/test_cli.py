"""The `kondense` command, run as a separate process the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kondense import zoo
from kondense.measure.profile import METRICS
from kondense.zoo import weights

from .conftest import run_cli, train_quick_zoo


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kondense: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_profile_json_reference_resnet18() -> None:
    result = run_cli(
        "profile", "--arch", "resnet18", "--num-classes", "100", "--input-shape", "3,32,32", "--json", check=True
    )
    metrics = json.loads(result.stdout)
    assert tuple(metrics) == tuple(m.key for m in METRICS)
    assert metrics["accuracy"] is None
    assert metrics["paramsM"] == pytest.approx(11.2201, rel=1e-3)
    assert metrics["macsG"] == pytest.approx(0.5567, rel=0.02)
    assert metrics["sizeMB"] == pytest.approx(42.8014, rel=1e-3)
    assert metrics["memoryMB"] > metrics["sizeMB"] and metrics["latencyMs"] > 0


def test_profile_table_with_data_and_weights(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    weights.save(path, zoo.build("mobilenet_v1", 10, 1), "mobilenet_v1", 10, 1, {})
    result = run_cli(
        "profile",
        "--arch",
        "mobilenet_v1",
        "--weights",
        str(path),
        "--data",
        "fashion-mnist",
        "--test-samples",
        "200",
        check=True,
    )
    for label in ("Accuracy (%)", "Size (MB)", "MACs (G)", "Params (M)", "Memory (MB)", "Latency (ms)"):
        assert label in result.stdout
    result = run_cli(
        "profile", "--arch", "mobilenet_v1", "--data", "fashion-mnist", "--test-samples", "200", "--json", check=True
    )
    assert 0 <= json.loads(result.stdout)["accuracy"] <= 100


def test_user_errors_are_one_clear_line(tmp_path: Path) -> None:
    assert_user_error(
        run_cli("profile", "--arch", "resnet18", "--num-classes", "10", "--input-shape", "3x32"),
        "malformed input shape",
        "C,H,W",
    )
    assert_user_error(
        run_cli("profile", "--arch", "resnet19", "--num-classes", "10", "--input-shape", "3,32,32"),
        "unknown architecture 'resnet19'",
        "resnet18, resnet50, vgg19",
    )
    path = tmp_path / "w.pt"
    weights.save(path, zoo.build("mobilenet_v1", 100, 3), "mobilenet_v1", 100, 3, {})
    assert_user_error(
        run_cli(
            "profile",
            "--arch",
            "mobilenet_v1",
            "--num-classes",
            "10",
            "--input-shape",
            "3,32,32",
            "--weights",
            str(path),
        ),
        "100 classes",
    )
    assert_user_error(run_cli("profile", "--arch", "resnet18", "--data", str(tmp_path / "nowhere")), "nowhere")
    assert_user_error(run_cli("zoo", "train", "resnet19", "--dataset", "fashion-mnist"), "unknown architecture")


def test_zoo_train_resumes_after_kill(tmp_path: Path, kondense_home: Path) -> None:
    out = tmp_path / "m.pt"
    args = [
        "zoo",
        "train",
        "mobilenet_v1",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "4",
        "--train-samples",
        "512",
        "--val-samples",
        "64",
        "--test-samples",
        "64",
        "--batch-size",
        "64",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kondense.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    checkpoint = out.with_suffix(".ckpt")
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    assert checkpoint.exists() and not out.exists(), "the run should have been killed after its first checkpoint"
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_at < 4

    result = run_cli(*args, check=True)
    # the log goes to stderr
    assert f"resuming mobilenet_v1 on fashion-mnist from epoch {killed_at}/4" in result.stderr
    assert f"epoch {killed_at}/4:" not in result.stderr  # finished epochs are not trained again
    assert "epoch 4/4:" in result.stderr
    assert out.exists() and not checkpoint.exists()
    meta = weights.read_meta(out)
    assert meta["epochs"] == 4 and meta["train_samples"] == 512
    weights.load_into(zoo.build("mobilenet_v1", 10, 1), out, "mobilenet_v1", 10, 1)


def test_zoo_train_learns_and_lists(kondense_home: Path) -> None:
    result = run_cli(
        "zoo",
        "train",
        "mobilenet_v1",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "2",
        "--train-samples",
        "1536",
        "--val-samples",
        "256",
        "--test-samples",
        "500",
        "--json",
        check=True,
    )
    trained = json.loads(result.stdout.strip().splitlines()[-1])
    assert trained["testAccuracy"] > 45, result.stdout  # 10 classes: chance is 10%
    path = Path(trained["path"])
    assert path.parent == kondense_home / "zoo" and "subset1536" in path.name
    listing = json.loads(run_cli("zoo", "list", "--json", check=True).stdout)
    assert listing["archs"] == zoo.list_archs()
    assert [t["arch"] for t in listing["trained"]] == ["mobilenet_v1"]
    assert "mobilenet_v1" in run_cli("zoo", "list", check=True).stdout


@pytest.fixture(scope="module")
def quick_zoo_file(tmp_path_factory) -> Path:
    """A mobilenet_v1 trained for seconds, saved as a zoo weights file (it names its own arch)."""
    out = tmp_path_factory.mktemp("zoo") / "mobilenet_v1.pt"
    train_quick_zoo(out, epochs=2, train=1536, val=256, test=256)
    return out


def test_compress_command_end_to_end(quick_zoo_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "compress",
        "--model",
        str(quick_zoo_file),
        "--data",
        "fashion-mnist",
        "--delta",
        "5",
        "--stage",
        "2",
        "--out",
        str(out),
        "--train-samples",
        "1024",
        "--val-samples",
        "300",
        "--test-samples",
        "300",
        "--ratios",
        "0.5",
        "--screen",
        "1",
        "--scan-samples",
        "200",
        "--stage1-epochs",
        "1",
        "--max-steps",
        "1",
        "--json",
        check=True,
    )
    report = json.loads(result.stdout)
    assert set(report) >= {"original", "stage1", "stage2", "enhancement", "trainingSamples"}
    # the wiring is what this test is about (test_compress checks that compression happens): with
    # 1,024 samples a plan may not survive fine-tuning, and then a stage keeps what it had
    assert report["original"]["paramsM"] >= report["stage1"]["paramsM"] >= report["stage2"]["paramsM"]
    assert "using a subset of fashion-mnist" in result.stderr and "stage 1" in result.stderr
    assert "candidates chosen by their gradient estimates" in result.stderr  # --screen reached the scan
    scanned = json.loads((out / "checkpoints" / "state.json").read_text())["scan"]
    assert len({o["layer"] for o in scanned}) == len(scanned)  # one option measured per layer
    assert json.loads((out / "report.json").read_text()) == report
    rebuilt = __import__("kondense").load_compressed(out / "model.pt")  # a zoo-based file rebuilds alone
    assert sum(p.numel() for p in rebuilt.parameters()) / 1e6 == pytest.approx(report["stage2"]["paramsM"])


def test_compress_user_errors(quick_zoo_file: Path, tmp_path: Path) -> None:
    common = [
        "--data",
        "fashion-mnist",
        "--delta",
        "1",
        "--train-samples",
        "256",
        "--val-samples",
        "64",
        "--test-samples",
        "64",
    ]
    assert_user_error(
        run_cli("compress", "--model", "zoo:resnet18", *common, "--out", str(tmp_path / "a")),
        "no trained resnet18 for fashion-mnist",
        "kondense zoo train resnet18 --dataset fashion-mnist",
    )
    assert_user_error(
        run_cli("compress", "--model", "zoo:resnet19", *common, "--out", str(tmp_path / "a")), "unknown architecture"
    )
    bare = tmp_path / "bare.pt"
    torch.save(zoo.build("mobilenet_v1", 10, 1).state_dict(), bare)
    assert_user_error(run_cli("compress", "--model", str(bare), *common, "--out", str(tmp_path / "b")), "--arch")
    scripted = tmp_path / "m.ts"
    torch.jit.script(zoo.build("mobilenet_v1", 10, 1)).save(str(scripted))
    assert_user_error(
        run_cli("compress", "--model", str(scripted), *common, "--out", str(tmp_path / "c")), "TorchScript"
    )
    # the output directory must not be where the input model lives under an output's name
    victim = tmp_path / "d" / "model.pt"
    victim.parent.mkdir()
    victim.write_bytes(quick_zoo_file.read_bytes())
    assert_user_error(
        run_cli("compress", "--model", str(victim), *common, "--out", str(victim.parent)),
        "would overwrite the input model",
    )
    assert victim.read_bytes() == quick_zoo_file.read_bytes()
    assert_user_error(
        run_cli("compress", "--model", str(quick_zoo_file), *common[:2], "--delta", "0", "--out", str(tmp_path / "e")),
        "spec.delta: ",
        "got 0",
    )


def test_compress_stage_3_with_quantize_none_is_refused_before_any_work(tmp_path: Path) -> None:
    args = ["--model", "zoo:resnet18", "--data", "fashion-mnist", "--delta", "1", "--out", str(tmp_path / "o")]
    assert_user_error(
        run_cli("compress", *args, "--stage", "3", "--quantize", "none"),
        "spec.quantize: must be int8 or omitted at stage 3",
        "choose stage 2",
    )
    assert not (tmp_path / "o").exists()


def test_compress_latency_flags_reach_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kondense.api
    from kondense.cli import build_parser

    class Called(Exception):
        pass

    seen: dict = {}

    def compress(*args, **kwargs):  # the engine itself is tested in tests/test_latency_objective.py
        seen.update(kwargs)
        raise Called

    monkeypatch.setattr(kondense.api, "compress", compress)
    common = ["compress", "--model", "zoo:resnet18", "--data", "fashion-mnist", "--delta", "1", "--out", str(tmp_path)]
    args = build_parser().parse_args([*common, "--objective", "latency", "--latency-runtime", "onnxruntime"])
    args.argv = []
    with pytest.raises(Called):
        args.func(args)
    assert (seen["latency_runtime"], seen["latency_batch"]) == ("onnxruntime", 1)
    args = build_parser().parse_args([*common, "--latency-batch", "32"])
    args.argv = []
    with pytest.raises(Called):
        args.func(args)
    assert (seen["latency_runtime"], seen["latency_batch"]) == ("torch", 32)


def test_compress_bad_latency_settings_are_refused_before_any_work(tmp_path: Path) -> None:
    args = ["--model", "zoo:resnet18", "--data", "fashion-mnist", "--delta", "1", "--out", str(tmp_path / "o")]
    assert_user_error(run_cli("compress", *args, "--latency-batch", "5000"), "spec.latency.batch", "[1, 4096]")
    result = run_cli("compress", *args, "--latency-runtime", "tensorrt")
    assert result.returncode == 2 and "invalid choice: 'tensorrt'" in result.stderr
    assert not (tmp_path / "o").exists()
