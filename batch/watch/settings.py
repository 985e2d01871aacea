"""The watch daemon's settings and the checks made before it starts: folders, the lock.

settings = WatchSettings(inbox=Path("inbox"), out=Path("sorted"), model="cifar10")
check_folders(settings)
with hold_lock(settings.out): ...
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from batch.backends import DEFAULT_REPOSITORY

STATE_DIR = ".clfwatch"


class WatchError(Exception):
    """A problem at start the user must fix (exit code 2)."""


@dataclass(frozen=True)
class WatchSettings:
    """Every option of `clfbatch watch`; times in seconds."""

    inbox: Path
    out: Path
    model: str
    version: int | None = None
    repository: Path = DEFAULT_REPOSITORY
    server: str | None = None
    action: str = "move"
    min_confidence: float = 0.0
    report: Path | None = None  # default: OUT/labels.csv
    settle: float = 1.0
    batch_max: int | None = None  # default: the model's preferred batch (as clfbatch run)
    batch_wait: float = 0.1
    recursive: bool = False
    labels_file: Path | None = None
    top_k: int = 3
    rescan: float = 2.0
    reload: float = 5.0  # how often to look for a newer model version
    journal: Path | None = None  # default: OUT/.clfwatch/journal.sqlite

    @property
    def report_path(self) -> Path:
        return self.report or self.out / "labels.csv"

    @property
    def journal_path(self) -> Path:
        return self.journal or self.out / STATE_DIR / "journal.sqlite"


def hold_lock(out: Path) -> IO[str]:
    """One daemon per output folder: a second one would break exactly-once."""
    handle = open(out / STATE_DIR / "lock", "a")  # noqa: SIM115 (held for the daemon's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise WatchError(f"another clfbatch watch is already writing to {out}") from None
    return handle


def check_folders(settings: WatchSettings) -> None:
    """A missing inbox or an unwritable output folder stops the daemon before it starts."""
    inbox = settings.inbox
    if not inbox.is_dir():
        raise WatchError(
            f"inbox {inbox} {'is not a folder' if inbox.exists() else 'does not exist'}"
        )
    try:
        (settings.out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        probe = settings.out / STATE_DIR / f"probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise WatchError(
            f"output folder {settings.out} is not writable: {exc.strerror or exc}"
        ) from None
