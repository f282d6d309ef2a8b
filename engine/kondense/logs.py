"""Logging for the engine: standard `logging`, one handler set up by the entry point.

Modules log through `logging.getLogger(__name__)` (all under the "kondense" logger) and never
print. The entry point (`kondense` command, a rank process, a test) calls `setup()` once. In a
run of several ranks only rank 0 speaks at INFO and below, so that N processes do not print
every line N times; warnings and errors of any rank get through, marked with the rank.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

ROOT = "kondense"


class RankFilter(logging.Filter):
    """Passes every record of rank 0, and warnings or worse of the other ranks (prefixed)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        if self.rank == 0:
            return True
        if record.levelno < logging.WARNING:
            return False
        record.msg = f"rank {self.rank}: {record.msg}"
        return True


def env_rank() -> int:
    """This process's global rank as the launchers set it (0 outside a distributed run)."""
    for name in ("RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def setup(level: int = logging.INFO, *, rank: int | None = None, stream: TextIO | None = None) -> logging.Logger:
    """Route the "kondense" logger's records to `stream` (stderr by default) as plain lines.

    Idempotent: a second call replaces the handler instead of adding one (tests call it often).
    """
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if getattr(handler, "_kondense", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._kondense = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RankFilter(env_rank() if rank is None else rank))
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
