"""Progress output: plain lines when not a terminal, nothing when quiet, a bar on a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from batch.progress import PlainProgress, RichProgress, RunProgress, make_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = make_progress(10, quiet=False, stream=stream)
    assert isinstance(progress, PlainProgress)
    progress = PlainProgress(10, stream, interval=0.0)
    with progress:
        progress.advance(4, errors=1)
        progress.advance(6)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("progress: 4/10 files, 1 errors,") and "images/s" in lines[0]
    assert lines[-1].startswith("progress: 10/10 files, 1 errors,") and "ETA" in lines[-1]


def test_quiet_prints_nothing_but_still_counts() -> None:
    stream = _Terminal()
    with make_progress(5, quiet=True, stream=stream) as progress:
        assert type(progress) is RunProgress
        progress.advance(7)
    assert stream.getvalue() == "" and progress.done == 7 and progress.total == 7


def test_a_terminal_gets_a_rich_bar() -> None:
    stream = _Terminal()
    progress = make_progress(3, quiet=False, stream=stream)
    assert isinstance(progress, RichProgress)
    progress.close()
    with RichProgress(3, Console(file=stream, force_terminal=True, width=120)) as bar:
        bar.advance(3, errors=1)
    assert "3/3" in stream.getvalue() and "1 errors" in stream.getvalue()
