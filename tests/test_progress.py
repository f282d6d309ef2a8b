import io

from kondense.progress import Progress


def test_off_a_terminal_prints_timed_lines_with_eta() -> None:
    stream = io.StringIO()  # not a TTY, like a log file or a pod's log
    with Progress(4, "stage 1 fine-tune", every_s=0.0, stream=stream) as progress:
        for _ in range(4):
            progress.update(loss=0.5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines  # none for the last step: the caller reports the end itself
    assert lines[0].startswith("  stage 1 fine-tune: 1/4 batches (25%), loss 0.500, ETA "), lines


def test_lines_are_rate_limited_and_can_be_silenced() -> None:
    stream = io.StringIO()
    progress = Progress(100, "scan", unit="pass", every_s=3600.0, stream=stream)
    for _ in range(99):
        progress.update()
    quiet = Progress(10, "other rank", enabled=False, every_s=0.0, stream=stream)
    for _ in range(9):
        quiet.update()
    assert stream.getvalue() == ""
    assert progress.done == 99
