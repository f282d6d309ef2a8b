import io
import logging

import pytest

from kondense import logs
from kondense.progress import Progress


def test_off_a_terminal_logs_timed_lines_with_eta(caplog: pytest.LogCaptureFixture) -> None:
    # under pytest stderr is not a TTY, like a log file or a pod's log
    with caplog.at_level(logging.INFO, logger="kondense"), Progress(4, "stage 1 fine-tune", every_s=0.0) as progress:
        for _ in range(4):
            progress.update(loss=0.5)
    lines = [r.getMessage() for r in caplog.records if r.name == "kondense.progress"]
    assert len(lines) == 3, lines  # none for the last step: the caller reports the end itself
    assert lines[0].startswith("  stage 1 fine-tune: 1/4 batches (25%), loss 0.500, ETA "), lines


@pytest.fixture
def own_handler():
    """logs.setup() installs a handler on the "kondense" logger: take it away after the test."""
    yield
    logger = logging.getLogger(logs.ROOT)
    for handler in [h for h in logger.handlers if getattr(h, "_kondense", False)]:
        logger.removeHandler(handler)


def test_lines_are_rate_limited_and_other_ranks_are_silent(own_handler) -> None:
    stream = io.StringIO()
    logs.setup(rank=0, stream=stream)
    progress = Progress(100, "scan", unit="pass", every_s=3600.0)
    for _ in range(99):
        progress.update()
    logs.setup(rank=1, stream=stream)  # the rank filter: only rank 0 logs progress
    quiet = Progress(10, "other rank", every_s=0.0)
    for _ in range(9):
        quiet.update()
    logs.setup(rank=0, stream=stream)
    loud = Progress(10, "rank 0", every_s=0.0)
    loud.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("  rank 0: 1/10 batches (10%), ETA "), lines
    assert progress.done == 99
