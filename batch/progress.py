"""Progress of a run: a rich bar on a terminal, plain periodic lines otherwise, or nothing.

with make_progress(total=1000, quiet=False) as progress:
    progress.advance(64, errors=1)
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

PLAIN_INTERVAL = 5.0


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} images/s" if speed else "- images/s", style="cyan")


class RunProgress:
    """Base: counts and timing, no output (the `--quiet` behaviour)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def advance(self, count: int, errors: int = 0) -> None:
        self.done += count
        self.errors += errors
        self.total = max(self.total, self.done)

    def close(self) -> None:
        """Stop drawing. Safe to call twice."""

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PlainProgress(RunProgress):
    """One line every `interval` seconds: for logs and pipes."""

    def __init__(self, total: int, stream: TextIO, interval: float = PLAIN_INTERVAL) -> None:
        super().__init__(total)
        self._stream = stream
        self._interval = interval
        self._last = self.started

    def advance(self, count: int, errors: int = 0) -> None:
        super().advance(count, errors)
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            left = (self.total - self.done) / self.rate if self.rate else 0.0
            print(
                f"progress: {self.done}/{self.total} files, {self.errors} errors, "
                f"{self.rate:,.0f} images/s, ETA {left:.0f} s",
                file=self._stream,
                flush=True,
            )


class RichProgress(RunProgress):
    """A live bar with images/s and ETA."""

    def __init__(self, total: int, console: Console) -> None:
        super().__init__(total)
        self._bar = Progress(
            TextColumn("[bold]classifying"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TextColumn("{task.fields[errors]} errors"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("run", total=total, errors=0)
        self._bar.start()

    def advance(self, count: int, errors: int = 0) -> None:
        super().advance(count, errors)
        self._bar.update(self._task, advance=count, total=self.total, errors=self.errors)

    def close(self) -> None:
        self._bar.stop()


def make_progress(total: int, *, quiet: bool, stream: TextIO | None = None) -> RunProgress:
    """The right progress display for `stream` (stderr by default)."""
    stream = stream or sys.stderr
    if quiet:
        return RunProgress(total)
    if stream.isatty():
        return RichProgress(total, Console(file=stream))
    return PlainProgress(total, stream)
