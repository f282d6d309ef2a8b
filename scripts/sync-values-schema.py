#!/usr/bin/env python3
"""Writes the shared definitions of charts/kondense/values.schema.json (port, pullPolicy, name,
stringMap, quantity, resources, tolerations, backoffLimit) from
operator/kondense_operator/worker-config.schema.json, the single source of what a worker setting
may be: the chart's `workers` values and the worker config file the chart renders from them can
then never disagree. The chart's own definitions (namespace, imageRepository, imageTag) and the
rest of values.schema.json stay as written.

    python scripts/sync-values-schema.py [OUT]     (make sync-values-schema; default OUT: the chart's file)

Helm reads the chart alone, so the definitions are copied, each marked with a $comment;
tests/test_chart.py fails while the committed file differs from what this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "operator" / "kondense_operator" / "worker-config.schema.json"
TARGET = ROOT / "charts" / "kondense" / "values.schema.json"
MARK = "a copy of operator/kondense_operator/worker-config.schema.json#/definitions (make sync-values-schema)"


def render(values: dict, worker: dict) -> str:
    """values.schema.json's text with `worker`'s definitions in place of the copies it holds."""
    own = {k: v for k, v in values["definitions"].items() if v.get("$comment") != MARK}
    shared = {k: {"$comment": MARK, **v} for k, v in worker["definitions"].items()}
    clash = sorted(set(own) & set(shared))
    if clash:
        raise SystemExit(
            f"sync-values-schema: {TARGET.relative_to(ROOT)} defines {', '.join(clash)} by hand, and "
            f"{SOURCE.relative_to(ROOT)} defines them too: delete them from the chart's file"
        )
    return json.dumps({**values, "definitions": {**shared, **own}}, indent=2) + "\n"


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else TARGET
    text = render(json.loads(TARGET.read_text(encoding="utf-8")), json.loads(SOURCE.read_text(encoding="utf-8")))
    out.write_text(text, encoding="utf-8")
    print(f"sync-values-schema: wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
