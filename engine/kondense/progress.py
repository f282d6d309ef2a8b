"""Progress for long loops: a tqdm bar on a terminal, timed log lines with an ETA everywhere else.

tqdm draws nothing useful into a log file or a pod's log (it is off there, or a mess of
carriage returns), yet that is where long fine-tunes run. So when stderr (where the logs go)
is not a terminal, a line is logged at most every `every_s` seconds:
`stage 1 fine-tune: 120/626 batches (19%), loss 0.412, ETA 3m10s`. Other ranks than 0 stay
quiet through the rank filter of kondense.logs, as every other INFO line does.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

from kondense.logs import env_rank

logger = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, total: int, description: str, *, unit: str = "batch", every_s: float = 30.0) -> None:
        self.total, self.description, self.unit = total, description, unit
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
