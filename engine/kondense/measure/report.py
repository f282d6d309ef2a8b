"""Human-readable tables of metrics."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from kondense.measure.profile import METRICS, Metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def metrics_table(columns: dict[str, Metrics], title: str | None = None) -> Table:
    """One row per metric, one column per model (e.g. Original, Stage 1, Stage 2)."""
    table = Table(title=title)
    table.add_column("Metric")
    for name in columns:
        table.add_column(name, justify="right")
    for metric in METRICS:
        table.add_row(metric.label, *(_fmt(getattr(m, metric.key)) for m in columns.values()))
    return table


def print_table(table: Table) -> None:
    Console().print(table)


COLUMNS = {"original": "Original", "stage1": "Stage 1", "stage2": "Stage 2", "stage3": "Stage 3"}


def enhancement(original: Metrics, final: Metrics) -> dict:
    """original / compressed for the five costs; the accuracy drop as a signed difference in points."""
    return {m.enhancement: m.enhance(getattr(original, m.key), getattr(final, m.key)) for m in METRICS}


def last_stage(columns: dict) -> str:
    """The key of the last stage that produced a model ("stage3", "stage2" or "stage1") among `columns`."""
    return next(k for k in reversed(COLUMNS) if k in columns and k != "original")


def build_report(metrics: dict[str, Metrics], **extra) -> dict:
    """report.json's metrics: each model's six, and the enhancement of the last stage that produced one."""
    final = metrics[last_stage(metrics)]
    return {
        **{k: m.to_dict() for k, m in metrics.items()},
        "enhancement": enhancement(metrics["original"], final),
        **extra,
    }


def _rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the report table: one row per metric, a column per stage, then Enhance."""
    stages = [k for k in COLUMNS if k in report]
    enh = report["enhancement"]
    rows = []
    for m in METRICS:
        value = enh[m.enhancement]
        if m.better == "higher":
            ratio = f"{-value:+.2f}"  # the drop, shown as the signed change
        else:
            ratio = f"{value:.2f}x" if value else "n/a"
        rows.append([m.label, *(_fmt(report[k][m.key]) for k in stages), ratio])
    return ["Metric", *(COLUMNS[k] for k in stages), "Enhance"], rows


def plan_table(plan: dict) -> Table:
    """The layers a plan changed: transforms with ratios, params and MACs before and after."""
    table = Table(title=f"plan ({len(plan['steps'])} steps, objective {plan['objective']})")
    for name, justify in (("Layer", "left"), ("Transforms (ratio)", "left"), ("Params", "right"), ("MACs", "right")):
        table.add_column(name, justify=justify)
    for layer, entry in plan["layers"].items():
        if not entry["transforms"] and entry["paramsAfter"] == entry["paramsBefore"]:
            continue
        done = ", ".join(f"{t['transform']} {t['ratio']:.2f}" for t in entry["transforms"]) or "(coupled)"
        table.add_row(
            layer,
            done,
            f"{entry['paramsBefore']:,} -> {entry['paramsAfter']:,}",
            f"{entry['macsBefore']:,} -> {entry['macsAfter']:,}",
        )
    return table


def _summary(report: dict) -> str:
    return (
        f"delta {report.get('delta')} points, stage {report.get('stage')}, objective {report.get('objective')}, "
        f"{report.get('trainingSamples', 0):,} training samples processed, {report.get('seconds', 0):.0f} s"
    )


def report_table(report: dict) -> Table:
    header, rows = _rows(report)
    notes = _stage3_notes(report)
    table = Table(title=f"kondense: {_summary(report)}", caption="\n".join(notes) or None, caption_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def write_markdown(report: dict, path) -> None:
    from kondense.files import atomic_write

    header, rows = _rows(report)
    lines = [
        "# kondense report",
        "",
        _summary(report),
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = _stage3_notes(report)
    if notes:
        lines += ["", *notes]
    if "onnx" in report:
        lines += ["", _onnx_line(report["onnx"])]
    if "int8" in report:
        lines += ["", _int8_line(report["int8"])]
    if "latency" in report:
        lines += ["", *_latency_lines(report["latency"], report.get("latencyTable"))]
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))


def _stage3_notes(report: dict) -> list[str]:
    """Under the table of a stage 3 run: what its Latency is (another runtime and precision than the float
    columns'), or why there is no Stage 3 column."""
    if report.get("stage") != 3:
        return []
    int8 = report.get("int8") or {}
    if "stage3" not in report:
        return [f"Stage 3: no INT8 model kept, so no Stage 3 column: {int8.get('error', 'no reason recorded')}"]
    latency = int8["latency"]
    return [
        f"Stage 3 is {int8['file']} in {latency['runtime']}, {latency['threads']} threads. Latency: per sample at "
        f"batch {latency['perSample']['batch']}, as the float columns' are in PyTorch on the run's device. Size: the "
        "weights stored in the file (1 byte where quantised, with scales and biases); Memory: the float model's "
        "with its weights at that width; MACs and Params: the float model's."
    ]


def _latency_lines(latency: dict, table: dict | None) -> list[str]:
    """Both models timed where they would run (measure.deployed_latency), each figure with its conditions."""
    lines = ["Latency, original -> compressed, ms per call:"]
    for key in ("torch", "onnxruntime"):
        part = latency.get(key)
        if part and "original" in part and "final" in part:
            timed = ", ".join(f"batch {b} {part['original'][b]:.3f} -> {part['final'][b]:.3f}" for b in part["final"])
            lines.append(f"- {part['runtime']} on {part['device']}, {part['threads']} threads: {timed}")
    if latency.get("onnxruntimeNote"):
        lines.append(f"- {latency['onnxruntimeNote']}")
    if table:
        lines.append(
            f"- the objective's table ({table['runtime']} on {table['device']}, {table['threads']} threads, batch "
            f"{table['batch']}, {table['layerShapes']} layer shapes timed once in {table['measureSeconds']:.1f} s): "
            f"Conv2d/Linear time {table['originalMs']:.3f} -> {table['finalMs']:.3f} ms"
        )
    return lines


def _onnx_line(entry: dict) -> str:
    parity = entry.get("parity")
    checked = (
        f"largest logit difference from PyTorch {parity['maxAbsLogitDiff']:.1e} on {parity['samples']} test samples "
        f"(tolerance {parity['tolerance']:.1e}), top-1 agreement {parity['top1Agreement']:.2f}%"
        if parity
        else ""
    )
    if entry.get("file"):
        return f"ONNX: {entry['file']} (opset {entry['opset']}, dynamic batch, {entry['runtime']}): {checked}."
    return f"ONNX: not written: {entry.get('error', 'no reason recorded')}" + (f" ({checked})" if checked else "")


def _int8_line(entry: dict) -> str:
    if "valAccuracy" not in entry:
        return f"INT8: not written: {entry.get('error', 'no reason recorded')}"
    latency = entry["latency"]
    measured = (
        f"val accuracy {entry['valAccuracy']:.2f}% (float {entry['fp32ValAccuracy']:.2f}%), test accuracy "
        f"{entry['testAccuracy']:.2f}%, weights {entry['sizeMB']:.3f} MB (float {entry['fp32SizeMB']:.3f} MB), "
        f"{latency['int8Ms']:.2f} ms (float {latency['fp32Ms']:.2f} ms) at batch {latency['batch']}, "
        f"{latency['threads']} threads, {latency['runtime']}"
    )
    qat = entry.get("qat")
    if qat:  # the fine-tune's cost belongs beside its result, kept or not
        measured += f"; quantisation-aware fine-tune: {qat['samples']:,} training samples, {qat['seconds']:.0f} s"
    if entry.get("file"):
        return f"INT8: {entry['file']} ({entry['method']}): {measured}."
    return f"INT8: not written: {entry['error']} ({measured})"


def plot_annealing(
    history: list[dict], original_size: float, original_val: float, delta: float, floor: float, path
) -> None:
    """Validation accuracy against size along the annealing path, with the budget's lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kondense.files import atomic_write

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([original_size], [original_val], "s", color="black", label="original")
    ax.axhline(
        original_val - delta, color="tab:red", linestyle="--", linewidth=1, label=f"original - delta ({delta:g})"
    )
    ax.axhline(floor, color="tab:orange", linestyle=":", linewidth=1, label="decision floor (with safety margin)")
    kept = [h for h in history if h["accepted"]]
    ax.plot([h["sizeMB"] for h in kept], [h["valAccuracy"] for h in kept], "o-", label="kept")
    rejected = [h for h in history if not h["accepted"]]
    if rejected:
        ax.plot(
            [h["sizeMB"] for h in rejected],
            [h["valAccuracy"] for h in rejected],
            "x",
            color="tab:red",
            label="rejected",
        )
    for h in history:
        ax.annotate(h["label"], (h["sizeMB"], h["valAccuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("size (MB, log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("annealing path")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
