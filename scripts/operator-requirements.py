#!/usr/bin/env python3
"""Prints the requirements of the operator image, one a line, with the versions pyproject.toml
pins: the `operator` extra and the job layer's share of the package's dependencies (kondense.job
is what the operator imports from the engine, and it needs no torch). The Dockerfile installs
the package with --no-deps and then these, so the pins live in pyproject.toml alone.

    python scripts/operator-requirements.py [PYPROJECT]     (default: ./pyproject.toml)
"""

from __future__ import annotations

import re
import sys

import tomllib

# The third-party modules kondense.job imports (yaml, jsonschema, celpy), as distribution names.
JOB_LAYER = {"pyyaml", "jsonschema", "cel-python"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[;=<>!~]", requirement, maxsplit=1)[0].lower()


def requirements(project: dict) -> list[str]:
    """The operator extra plus the job layer's dependencies; an error names a missing one."""
    job = [r for r in project["dependencies"] if _name(r) in JOB_LAYER]
    missing = JOB_LAYER - {_name(r) for r in job}
    if missing:
        raise SystemExit(
            f"operator-requirements: pyproject.toml's dependencies lack {sorted(missing)}, "
            "which kondense.job imports: add them there or update JOB_LAYER here"
        )
    return list(dict.fromkeys(job + project["optional-dependencies"]["operator"]))


def main(argv: list[str]) -> None:
    with open(argv[0] if argv else "pyproject.toml", "rb") as f:
        print("\n".join(requirements(tomllib.load(f)["project"])))


if __name__ == "__main__":
    main(sys.argv[1:])
