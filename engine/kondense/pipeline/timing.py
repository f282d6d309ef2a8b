"""Where a compression run's time goes: the search (sensitivity scans, gradient estimates and
composed probes), fine-tuning, and evaluation. Kept in the run's state, so a resumed run adds to
what it had."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

PARTS = ("scan", "fineTune", "eval")
# What the search's time (the scan part) went to: stage 1's measured options, the gradient estimates
# (stage 1's screen and every annealing step) and the composed models measured to fit each plan.
SEARCH = ("trials", "estimates", "probes")


class Stopwatch:
    def __init__(self, seconds: dict[str, float], since: float | None = None) -> None:
        """`since`: the time.perf_counter() this run began at, if before the stopwatch was made."""
        self.seconds = seconds  # the run state's own dict: saving the state saves it
        for part in (*PARTS, "total"):
            self.seconds.setdefault(part, 0.0)
        self.search = self.seconds.setdefault("search", dict.fromkeys(SEARCH, 0.0))
        self._mark = time.perf_counter() if since is None else since

    def _lap(self) -> None:
        # the total moves on with every part, so a state saved after any part holds it (a killed run
        # resumes with what it had done; the time between kill and resume is not counted)
        now = time.perf_counter()
        self.seconds["total"] += now - self._mark
        self._mark = now

    @contextmanager
    def timing(self, part: str) -> Iterator[None]:
        try:
            with _adding(self.seconds, part):
                yield
        finally:
            self._lap()

    def searching(self, detail: str) -> AbstractContextManager:
        """Time spent on one of SEARCH, which the caller's timing("scan") around it also counts."""
        return _adding(self.search, detail)

    @property
    def total(self) -> float:
        self._lap()
        return self.seconds["total"]

    def report(self) -> dict[str, float]:
        """report.json's `timing`: seconds per part, the rest (loading, caching the teacher, writing), the total,
        and `search`: the scan part's seconds per SEARCH detail."""
        total = self.total
        parts = {f"{part}Seconds": round(self.seconds[part], 2) for part in PARTS}
        other = max(total - sum(self.seconds[part] for part in PARTS), 0.0)
        search = {f"{detail}Seconds": round(self.search[detail], 2) for detail in SEARCH}
        return {**parts, "otherSeconds": round(other, 2), "totalSeconds": round(total, 2), "search": search}


@contextmanager
def _adding(seconds: dict[str, float], key: str) -> Iterator[None]:
    """The block's wall time added to seconds[key], however it ends."""
    began = time.perf_counter()
    try:
        yield
    finally:
        seconds[key] += time.perf_counter() - began


def searching(watch: Stopwatch | None, detail: str) -> AbstractContextManager:
    """`watch.searching(detail)`, or nothing where no stopwatch is kept (the conductor called on its own)."""
    return watch.searching(detail) if watch is not None else contextlib.nullcontext()
