"""One inbox file's record in the watch daemon's journal, and the states it walks through.

`seen -> classified -> placed -> reported`; `superseded` (the file changed after it was seen: it
is picked up again as a new arrival) is the other terminal state. `batch.watch.journal` stores
each step before it is taken; `batch.watch.work` takes the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch.fsutil import Identity

SEEN, CLASSIFIED, PLACED, REPORTED, SUPERSEDED = (
    "seen",
    "classified",
    "placed",
    "reported",
    "superseded",
)


@dataclass(frozen=True)
class NewFile:
    """A settled inbox file about to enter a batch."""

    source: Path
    rel: str
    identity: Identity
    action: str
    true_label: str | None = None


@dataclass
class Entry:
    """One journal row."""

    id: int
    source: Path
    rel: str
    identity: Identity
    state: str
    action: str
    true_label: str | None
    seen_at: float
    outcome: dict[str, Any] | None = None
    dest: Path | None = None
    row: str | None = None
    report_offset: int | None = None
