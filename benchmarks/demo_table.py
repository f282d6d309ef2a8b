"""kondense's result beside the peers' on the same original: the demo's last table.

    python benchmarks/demo_table.py out/demo/compressed/report.json benchmarks/results/peers-demo.json

For each method: the largest parameter ratio it reached within delta on validation (how every
method decides), its MACs ratio, and its accuracy and drop on all the test images, marked where the
test drop passes delta. kondense's row is its report; the peers' rows are a recorded run of
benchmarks/peers.py on the demo's original (the same weights recipe, data subsets and training samples).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def rows(report: dict, peers: dict) -> list[tuple[str, float | None, float | None, float | None, int | None]]:
    """(method, params x, MACs x, test accuracy, training samples); kondense first, then the peers' best."""
    e = report["enhancement"]
    final = report.get("stage2") or report["stage1"]
    out = [("kondense", e["params"], e["macs"], final["accuracy"], report["trainingSamples"])]
    for m in peers["methods"]:
        if "skipped" in m:
            out.append((f"{m['method']} (skipped: not installed)", None, None, None, None))
        elif m.get("bestRatio") is None:
            out.append((f"{m['method']} (none within delta)", None, None, None, m.get("samples")))
        else:
            out.append((m["method"], m["bestRatio"], m.get("macsRatioAtBest"), m["testAccuracyAtBest"], m["samples"]))
    return out


def table(report: dict, peers: dict) -> Table:
    original = report["original"]["accuracy"]
    delta = report["delta"]
    t = Table(title=f"kondense and its peers within delta = {delta} (original {original:.2f}% on the test images)")
    for name, justify in (("Method", "left"), ("Params", "right"), ("MACs", "right"), ("Test acc.", "right")):
        t.add_column(name, justify=justify)
    t.add_column("Drop", justify="right")
    t.add_column("Samples", justify="right")
    for method, params, macs, acc, samples in rows(report, peers):
        if params is None:
            t.add_row(method, "-", "-", "-", "-", "-")
            continue
        drop = original - acc if acc is not None else None
        t.add_row(
            method,
            f"{params:.2f}x",
            f"{macs:.2f}x" if macs else "-",
            f"{acc:.2f}%" if acc is not None else "none within delta",
            "-" if drop is None else f"{drop:+.2f}" + (" (over delta)" if drop > delta else ""),
            f"{samples:,}",
        )
    return t


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    report, peers = (json.loads(Path(p).read_text()) for p in argv)
    Console().print(table(report, peers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
