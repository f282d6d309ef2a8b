"""kondense's result beside the peers': the demo's last table.

    python benchmarks/demo_table.py out/demo/compressed/report.json benchmarks/results/peers-demo.json \\
        [out/demo/peer.json]

Each row's drop is against the original that row compressed, and the table says which: the demo trains
its own original, and two trainings of the same recipe differ by a few tenths of a point.
- kondense: its report, on the demo's original.
- the live peer (optional third file): benchmarks/peers.py with `--no-search --at-ratio` kondense's ratio,
  run by the demo on the same original, data and training samples: the two side by side.
- the recorded peers: a run of benchmarks/peers.py on an earlier training of the same recipe; for each
  method the largest parameter ratio it reached within delta on validation (how every method decides),
  its MACs ratio, and its accuracy on all the test images, marked where the test drop passes delta.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.table import Table


class Row(NamedTuple):
    method: str
    params: float | None  # ratio, original / compressed
    macs: float | None
    accuracy: float | None  # on all the test images
    original: float | None  # the test accuracy of the original this row compressed
    samples: int | None


def rows(report: dict, peers: dict, live: dict | None = None) -> list[Row]:
    """kondense first, then the live peer at kondense's ratio (if any), then the recorded peers' best."""
    e = report["enhancement"]
    final = report.get("stage2") or report["stage1"]
    ours = report["original"]["accuracy"]
    out = [Row("kondense", e["params"], e["macs"], final["accuracy"], ours, report["trainingSamples"])]
    for m in (live or {}).get("methods", []):
        for t in m.get("trials", []):
            out.append(
                Row(
                    f"{m['method']} at kondense's ratio" + ("" if t.get("withinDelta", True) else " (val: over delta)"),
                    t["paramsRatio"],
                    t["macsRatio"],
                    t["testAccuracy"],
                    live["original"]["testAccuracy"],
                    t["samples"],
                )
            )
    theirs = peers["original"]["testAccuracy"]
    for m in peers["methods"]:
        if "skipped" in m:
            out.append(Row(f"{m['method']} (skipped: not installed)", None, None, None, None, None))
        elif m.get("bestRatio") is None:
            out.append(Row(f"{m['method']} (none within delta)", None, None, None, theirs, m.get("samples")))
        else:
            out.append(
                Row(
                    f"{m['method']} (recorded)",
                    m["bestRatio"],
                    m.get("macsRatioAtBest"),
                    m["testAccuracyAtBest"],
                    theirs,
                    m["samples"],
                )
            )
    return out


def table(report: dict, peers: dict, live: dict | None = None) -> Table:
    delta = report["delta"]
    t = Table(
        title=f"kondense and its peers, delta = {delta}, accuracy on all the test images",
        caption="recorded: benchmarks/results/peers-demo.json, each method's best ratio within delta on validation, "
        "on an earlier training of the same recipe",
    )
    for name in ("Method", "Params", "MACs", "Test acc.", "Original", "Drop", "Samples"):
        t.add_column(name, justify="left" if name == "Method" else "right")
    for row in rows(report, peers, live):
        if row.params is None:
            t.add_row(row.method, *["-"] * 6)
            continue
        drop = row.original - row.accuracy
        t.add_row(
            row.method,
            f"{row.params:.2f}x",
            f"{row.macs:.2f}x" if row.macs else "-",
            f"{row.accuracy:.2f}%",
            f"{row.original:.2f}%",
            f"{drop:+.2f}" + (" (over delta)" if drop > delta else ""),
            f"{row.samples:,}",
        )
    return t


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    report, peers, *live = (json.loads(Path(p).read_text()) for p in argv)
    Console().print(table(report, peers, live[0] if live else None))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
