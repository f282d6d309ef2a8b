"""Progress for long loops: a tqdm bar on a terminal, timed log lines with an ETA everywhere else.

tqdm draws nothing useful into a log file or a pod's log (it is off there, or a mess of
carriage returns), yet that is where long fine-tunes run. So when stderr (where the logs go)
is not a terminal, a line is logged at most every `every_s` seconds:
`stage 1 fine-tune: 120/626 batches (19%), loss 0.412, ETA 3m10s`. Other ranks than 0 stay
quiet through the rank filter of kondense.logs, as every other INFO line does.

StageProgress is where a whole stage stands, for the operator rather than a person: on rank 0 of
a pod (KONDENSE_PROGRESS_LINES=1, which the operator's pod template sets) it prints one line
`KONDENSE-PROGRESS {"stage": 2, "step": 3, "steps": 8, "percent": 41, ...}` to stdout at most
every EVERY_S seconds and at every step boundary. The operator reads the last such line from the
pod's log (pods/log), so workers need no API rights, no port and no server. docs/operator.md
("Progress") says what step, steps and percent mean in each stage.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import EllipsisType
from typing import TextIO

from tqdm import tqdm

from kondense.logs import env_rank

logger = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(
        self, total: int, description: str, *, unit: str = "batch", every_s: float = 30.0, stage: bool = False
    ) -> None:
        """stage: these units are the running stage's work (a fine-tune's batches), which its
        StageProgress turns into step and percent; other loops (teacher logits) are not."""
        self.total, self.description, self.unit = total, description, unit
        self.feeds = _active if stage else None
        self.every_s = every_s
        self.done, self.postfix = 0, ""
        self.began = self.last = time.monotonic()
        # a bar bypasses logging, and so its rank filter: only rank 0 draws one
        tty = sys.stderr.isatty() and logger.isEnabledFor(logging.INFO) and env_rank() == 0
        self.bar = (
            tqdm(total=total, desc=description, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr)
            if tty
            else None
        )

    def update(self, n: int = 1, **postfix: float | str) -> None:
        self.done += n
        if self.feeds is not None:
            self.feeds.batches(self.done, self.total)
        self.postfix = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items())
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix_str(self.postfix)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self.done / max(now - self.began, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        extra = f", {self.postfix}" if self.postfix else ""
        plural = self.unit + ("es" if self.unit.endswith(("ch", "sh", "s", "x")) else "s")
        logger.info(
            f"  {self.description}: {self.done}/{self.total} {plural} ({100 * self.done / max(self.total, 1):.0f}%)"
            f"{extra}, ETA {_clock(eta)}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


PREFIX = "KONDENSE-PROGRESS "
LINES_ENV = "KONDENSE_PROGRESS_LINES"
EVERY_S = 5.0  # the operator reads at most every 10 s by default: a line this fresh is always there


def lines_wanted() -> bool:
    """Lines only where something reads them (the operator's pods set LINES_ENV) and only from rank 0:
    a terminal has its tqdm bar and `kondense run` its log lines, which these would only clutter."""
    return os.environ.get(LINES_ENV, "") == "1" and env_rank() == 0


class StageProgress:
    """Where one stage stands: step of steps, the fraction done, an ETA from the rate so far, the
    current model's validation accuracy and compression. Two ways to count (the stage picks one
    before each fine-tune): count_batches (the fine-tune's batches are the steps: stage 1) and
    within_step (the batches move the fraction inside one of `steps` steps: stage 2)."""

    def __init__(
        self,
        stage: int,
        *,
        enabled: bool | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
    ) -> None:
        self.stage = stage
        self.enabled = lines_wanted() if enabled is None else enabled
        self.every_s = EVERY_S if every_s is None else every_s
        self.clock, self.stream = clock, stream
        self.step: int | None = 0
        self.steps: int | None = None
        self.fraction: float | None = None
        self.val_accuracy: float | None = None
        self.compression: float | None = None
        self.message = ""
        self.finished = False
        self.shown_percent = 0  # percent never goes back within a stage (count_batches says when it would)
        self.last_emit: float | None = None
        # (time, fraction) the ETA's rate is measured from: this process's own work only (a resumed
        # stage did part of it before), and not the scan before stage 1's first batch
        self.rate_since: tuple[float, float | None] = (clock(), None)
        self._batches: Callable[[int, int], None] | None = None

    # ---- how the fine-tune's batches count

    def count_batches(self, offset: int, planned: int) -> None:
        """The next fine-tune's `planned` batches are steps, after `offset` earlier ones. A retried
        attempt adds its batches to steps: work nobody planned, so percent holds where it was (it
        never goes back) while step, steps and etaSeconds count the new batches."""
        # no line of its own: the caller's boundary line says what begins
        self.step, self.steps, self.fraction = offset, offset + planned, offset / max(offset + planned, 1)
        self.rate_since = (self.clock(), self.fraction)  # the fine-tune's rate: the scan before it is no batch's

        def batches(done: int, total: int) -> None:
            self.update(step=offset + done, steps=offset + total, fraction=(offset + done) / max(offset + total, 1))

        self._batches = batches

    def within_step(self, done_steps: int, steps: int | None) -> None:
        """The next fine-tunes run step done_steps + 1 of `steps` (None: no cap, so no fraction).
        A second fine-tune of the same step does not move it back: the step's share stays spent."""
        inner = 0.0
        if self.rate_since[1] is None and steps:
            self.rate_since = (self.clock(), done_steps / steps)

        def batches(done: int, total: int) -> None:
            nonlocal inner
            inner = max(inner, min(1.0, done / max(total, 1)))
            self.update(fraction=(done_steps + inner) / steps if steps else None)

        self._batches = batches
        fraction = done_steps / steps if steps else None
        message = f"step {done_steps + 1}" + (f" of at most {steps}" if steps else "")
        self.update(step=done_steps, steps=steps, fraction=fraction, message=message, boundary=True)

    def batches(self, done: int, total: int) -> None:
        if self._batches is not None:
            self._batches(done, total)

    # ---- reporting

    def update(
        self,
        *,
        step: int | None = None,
        steps: int | None = None,
        fraction: float | None | EllipsisType = ...,
        val_accuracy: float | None = None,
        compression: float | None = None,
        message: str | None = None,
        boundary: bool = False,
    ) -> None:
        """Record what changed (fraction None: unknown, left out: unchanged); a line if `boundary`
        (a step began or ended) or EVERY_S passed since the last one."""
        if step is not None:
            self.step = step
        if steps is not None:
            self.steps = steps
        if fraction is not ...:
            self.fraction = None if fraction is None else min(1.0, max(0.0, fraction))
        if val_accuracy is not None:
            self.val_accuracy = float(val_accuracy)
        if compression is not None:
            self.compression = float(compression)
        if message is not None:
            self.message = message
        if not self.enabled:
            return
        now = self.clock()
        # the first line is a boundary's (the stage's start): only then is where it stands known
        if boundary or self.last_emit is not None and now - self.last_emit >= self.every_s:
            self.last_emit = now
            print(
                PREFIX + json.dumps(self.record(now), separators=(",", ":")), file=self.stream or sys.stdout, flush=True
            )

    def finish(self, *, val_accuracy: float | None = None, compression: float | None = None, message: str = "") -> None:
        """The stage is done: percent 100, ETA 0, always a line."""
        self.finished = True
        self._batches = None
        if self.steps is not None:
            self.step = self.steps
        self.update(fraction=1.0, val_accuracy=val_accuracy, compression=compression, message=message, boundary=True)

    def record(self, now: float | None = None) -> dict:
        """The line's JSON: the keys of the CompressionJob's status.progress; unknown figures left out."""
        now = self.clock() if now is None else now
        out: dict = {"stage": self.stage}
        if self.step is not None:
            out["step"] = int(self.step)
        if self.steps is not None:
            out["steps"] = int(self.steps)
        if self.fraction is not None:
            # 100 only once the stage says so: the last batch is not the end (the evaluation follows)
            percent = 100 if self.finished else min(99, math.floor(100 * self.fraction))
            self.shown_percent = out["percent"] = max(self.shown_percent, percent)
            eta = self._eta(now)
            if eta is not None:
                out["etaSeconds"] = eta
        if self.val_accuracy is not None:
            out["valAccuracy"] = round(self.val_accuracy, 3)
        if self.compression is not None:
            out["compression"] = round(self.compression, 3)
        if self.message:
            out["message"] = self.message
        return out

    def _eta(self, now: float) -> int | None:
        """Seconds left at the rate measured since rate_since; None until there is a rate."""
        if self.finished:
            return 0
        began, start = self.rate_since
        if start is None or self.fraction is None or self.fraction <= start or now <= began:
            return None
        return max(0, round((now - began) * (1 - self.fraction) / (self.fraction - start)))


_active: StageProgress | None = None


@contextmanager
def stage_progress(stage: int, **kwargs) -> Iterator[StageProgress]:
    """The running stage's StageProgress, which fine-tunes' Progress(stage=True) feed while it is open."""
    global _active
    tracker = StageProgress(stage, **kwargs)
    outer, _active = _active, tracker
    try:
        yield tracker
    finally:
        _active = outer
