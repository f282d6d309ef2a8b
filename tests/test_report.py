"""report.md and the CLI's table with a Stage 3 column, and the enhancement against the last stage."""

from __future__ import annotations

import io

from rich.console import Console

from kondense.measure import profile, report

LATENCY = {
    "runtime": "onnxruntime (CPUExecutionProvider)",
    "threads": 2,
    "batch": 1,
    "int8Ms": 0.3,
    "fp32Ms": 0.4,
    "perSample": {"batch": 32, "int8Ms": 0.05},
}


def metrics(value: float, **change: float) -> profile.Metrics:
    return profile.Metrics(**{m.key: value for m in profile.METRICS} | change)


def stage3_report(kept: bool) -> dict:
    columns = {"original": metrics(8.0), "stage1": metrics(4.0), "stage2": metrics(2.0)}
    if kept:
        columns["stage3"] = metrics(2.0, sizeMB=0.5, accuracy=1.5)
    int8 = (
        {"file": "model.int8.onnx", "latency": LATENCY}
        if kept
        else {"file": None, "error": "the INT8 model's validation accuracy 50.00% is below the floor 80.00%"}
    )
    return report.build_report(columns, stage=3, delta=1.0, objective="params", int8=int8)


def cli_text(table) -> str:
    console = Console(file=io.StringIO(), width=300)
    console.print(table)
    return console.file.getvalue()


def test_the_stage3_column_and_the_enhancement_against_it(tmp_path):
    r = stage3_report(kept=True)
    assert report.last_stage(r) == "stage3"
    assert r["enhancement"]["size"] == 16.0 and r["enhancement"]["accuracyDrop"] == 6.5  # 8 / 0.5; 8 - 1.5
    assert r["enhancement"]["params"] == 4.0  # INT8 keeps the float model's parameters
    header, rows = report._rows(r)
    assert header == ["Metric", "Original", "Stage 1", "Stage 2", "Stage 3", "Enhance"]
    assert rows[1] == ["Size (MB)", "8.0000", "4.0000", "2.0000", "0.5000", "16.00x"]
    report.write_markdown(r, tmp_path / "report.md")
    md = (tmp_path / "report.md").read_text()
    assert "| Metric | Original | Stage 1 | Stage 2 | Stage 3 | Enhance |" in md
    note = (
        "Stage 3 is model.int8.onnx in onnxruntime (CPUExecutionProvider), 2 threads. Latency: per sample at batch 32"
    )
    assert note in md
    text = cli_text(report.report_table(r))
    assert "Stage 3" in text and "16.00x" in text and "per sample at batch 32" in text


def test_without_a_kept_int8_model_there_is_no_stage3_column_and_the_report_says_why(tmp_path):
    r = stage3_report(kept=False)
    assert "stage3" not in r and r["enhancement"]["size"] == 4.0  # against stage 2, the last model produced
    header, _ = report._rows(r)
    assert header == ["Metric", "Original", "Stage 1", "Stage 2", "Enhance"]
    why = "Stage 3: no INT8 model kept, so no Stage 3 column: the INT8 model's validation accuracy 50.00% is below"
    report.write_markdown(r, tmp_path / "report.md")
    assert why in (tmp_path / "report.md").read_text()
    assert "no INT8 model kept" in cli_text(report.report_table(r))


def test_stage_2_reports_say_nothing_of_stage_3(tmp_path):
    r = report.build_report({"original": metrics(8.0), "stage1": metrics(4.0), "stage2": metrics(2.0)}, stage=2)
    report.write_markdown(r, tmp_path / "report.md")
    assert "Stage 3" not in (tmp_path / "report.md").read_text()
    assert "Stage 3" not in cli_text(report.report_table(r))


def test_the_int8_line_gives_the_quantisation_aware_fine_tunes_cost_kept_or_not():
    entry = {
        "file": "model.int8.onnx",
        "method": "onnxruntime quantize_static; minimum/maximum ranges",
        "valAccuracy": 90.1,
        "fp32ValAccuracy": 90.5,
        "testAccuracy": 89.9,
        "sizeMB": 0.2,
        "fp32SizeMB": 0.65,
        "latency": LATENCY,
    }
    assert "quantisation-aware" not in report._int8_line(entry), "no fine-tune ran: none is reported"
    entry["qat"] = {"samples": 10_048, "seconds": 41.6, "lr": 0.002, "epochs": 0.5}
    kept = report._int8_line(entry)
    assert (
        kept.startswith("INT8: model.int8.onnx")
        and "quantisation-aware fine-tune: 10,048 training samples, 42 s" in kept
    )
    failed = report._int8_line(
        entry | {"file": None, "error": "below the floor after quantisation-aware fine-tuning too"}
    )
    assert failed.startswith("INT8: not written: below the floor") and "10,048 training samples" in failed
