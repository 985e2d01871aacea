"""Settled inbox files waiting for their micro-batch, oldest first.

A batch is due when `batch_max` files wait or the first of them has waited `batch_wait` seconds.

    arrivals = Arrivals(batch_max=64, batch_wait=0.1)
    arrivals.add(NewFile(...))
    if arrivals.due():
        batch = arrivals.take()
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from batch.watch.entry import NewFile


class Arrivals:
    """The daemon's queue between the settle rule and the journal. Used by the main loop only."""

    def __init__(self, batch_max: int, batch_wait: float) -> None:
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self._files: dict[Path, NewFile] = {}
        self._since = 0.0  # when the current wait for a batch started

    def __contains__(self, path: Path) -> bool:
        return path in self._files

    def __len__(self) -> int:
        return len(self._files)

    def add(self, new: NewFile) -> None:
        if not self._files:
            self._since = time.monotonic()
        self._files[new.source] = new

    def due(self) -> bool:
        if not self._files:
            return False
        waited = time.monotonic() - self._since
        return len(self._files) >= self.batch_max or waited >= self.batch_wait

    def take(self) -> list[NewFile]:
        """The oldest `batch_max` files; the rest start a new wait."""
        batch = list(itertools.islice(self._files.values(), self.batch_max))
        for new in batch:
            del self._files[new.source]
        self._since = time.monotonic()
        return batch

    def time_left(self) -> float | None:
        """Seconds until a batch is due by waiting (None: nothing waits)."""
        if not self._files:
            return None
        return self._since + self.batch_wait - time.monotonic()

    def clear(self) -> None:
        """After a failure: recovery starts from the journal, the rescan finds these again."""
        self._files.clear()
