"""Human-readable tables of metrics."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .profile import Metrics

LABELS = {
    "accuracy": "Accuracy (%)",
    "sizeMB": "Size (MB)",
    "macsG": "MACs (G)",
    "paramsM": "Params (M)",
    "memoryMB": "Memory (MB)",
    "latencyMs": "Latency (ms)",
}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def metrics_table(columns: dict[str, Metrics], title: str | None = None) -> Table:
    """One row per metric, one column per model (e.g. Original, Stage 1, Stage 2)."""
    table = Table(title=title)
    table.add_column("Metric")
    for name in columns:
        table.add_column(name, justify="right")
    for key, label in LABELS.items():
        table.add_row(label, *(_fmt(getattr(m, key)) for m in columns.values()))
    return table


def print_table(table: Table) -> None:
    Console().print(table)
