"""The watch daemon's settings and the checks made before it starts: folders, the lock.

settings = WatchSettings(inbox=Path("inbox"), out=Path("sorted"), model="cifar10")
check_folders(settings)
with hold_lock(settings.out): ...
"""

from __future__ import annotations

import enum
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated

from batch.errors import BatchError
from batch.model_choice import ModelChoice
from batch.options import Arg, Opt

STATE_DIR = ".clfwatch"


class Action(enum.StrEnum):
    move = "move"
    copy = "copy"
    link = "link"
    none = "none"


@dataclass(frozen=True)
class WatchSettings(ModelChoice):
    """Every option of `clfbatch watch` (each also a `CLFBATCH_*` variable, see batch.options)."""

    inbox: Annotated[Path, Arg("Folder to watch for incoming images.")]
    out: Annotated[Path, Opt("Output folder: OUT/<label>/, _uncertain, _rejected.")]
    version: Annotated[
        int | None, Opt("Pin a model version (default: the default one, followed live).")
    ] = None
    version_label: Annotated[
        str | None, Opt("Follow the newest version carrying this label (e.g. fast) instead.")
    ] = None
    action: Annotated[Action, Opt("What to do with each file.")] = Action.move
    min_confidence: Annotated[
        float, Opt("Below it, files go to OUT/_uncertain/.", min=0.0, max=1.0)
    ] = 0.0
    report: Annotated[Path | None, Opt("Report CSV/JSONL (default: OUT/labels.csv).")] = None
    settle_ms: Annotated[int, Opt("A file must keep its size and mtime this long.", min=0)] = 1000
    batch_max: Annotated[
        int | None, Opt("Most files per micro-batch (default: as clfbatch run's).", min=1)
    ] = None
    batch_ms: Annotated[int, Opt("Longest wait for a micro-batch to fill.", min=0)] = 100
    recursive: Annotated[bool, Opt("Watch every sub-folder too.")] = False
    labels: Annotated[Path | None, Opt("CSV of path,label: true labels for arriving files.")] = None
    top_k: Annotated[int, Opt("Labels and scores kept per image.", min=1)] = 3
    rescan_s: Annotated[
        float, Opt("Full rescan period (backs up lost events; put off while busy).", min=0.05)
    ] = 2.0
    reload_s: Annotated[float, Opt("How often to look for a newer model version.", min=0.1)] = 5.0
    journal: Annotated[
        Path | None, Opt("Journal file (default: OUT/.clfwatch/journal.sqlite).")
    ] = None
    log_json: Annotated[bool, Opt("Log one JSON object per line.")] = False

    @property
    def settle(self) -> float:
        return self.settle_ms / 1000

    @property
    def batch_wait(self) -> float:
        return self.batch_ms / 1000

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
        raise BatchError(f"another clfbatch watch is already writing to {out}") from None
    return handle


def check_folders(settings: WatchSettings) -> None:
    """A missing inbox or an unwritable output folder stops the daemon before it starts."""
    inbox = settings.inbox
    if settings.labels is not None and not settings.labels.is_file():
        raise BatchError(f"labels file {settings.labels} does not exist")
    if not inbox.is_dir():
        raise BatchError(
            f"inbox {inbox} {'is not a folder' if inbox.exists() else 'does not exist'}"
        )
    try:
        (settings.out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        probe = settings.out / STATE_DIR / f"probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BatchError(
            f"output folder {settings.out} is not writable: {exc.strerror or exc}"
        ) from None
