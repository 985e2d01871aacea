"""The watch daemon's report: an append-only CSV (or JSONL) of `clfbatch run`'s columns plus
`time` and `new_path`, synced after every batch and repaired at start.

Rows are rendered to text before they are appended and the journal keeps that text with its byte
offset, so after a crash the daemon can tell, byte for byte, whether a row made it into the file.
`clfbatch report labels.csv` reads these reports like any other (extra columns are ignored).

    report = AppendReport(outdir / "labels.csv", backend.labels)
    report.open()                         # header, torn last line repaired
    offset = report.size()
    report.append(render(row, time=..., new_path="cat/IMG_1.jpg", ...))
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from batch.fsutil import fsync_dir
from batch.report import (
    ReportFormat,
    ReportRow,
    csv_header,
    format_of,
    report_labels,
    to_csv_record,
    to_json_record,
)

log = logging.getLogger(__name__)


class ReportMismatch(Exception):
    """The existing report was written for other classes: the daemon must not mix them."""


def watch_header(labels: Sequence[str]) -> list[str]:
    """`time`, `path`, `new_path`, then the rest of `clfbatch run`'s columns."""
    head = csv_header(labels)
    return ["time", head[0], "new_path", *head[1:]]


def _csv_line(values: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def render(
    row: ReportRow, *, time: str, new_path: str, labels: Sequence[str], fmt: ReportFormat
) -> str:
    """One report line (with its newline) for `row`."""
    if fmt == "jsonl":
        record = {"time": time, "new_path": new_path, **to_json_record(row, labels)}
        return json.dumps(record) + "\n"
    values = to_csv_record(row, len(labels))
    return _csv_line([time, values[0], new_path, *values[1:]])


class AppendReport:
    """A report file only ever appended to (and cut back only past its last complete row)."""

    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        self.path = path
        self.labels = tuple(labels)
        self.format: ReportFormat = format_of(path)

    def open(self) -> None:
        """Create it with its header, or repair a torn last line and check its classes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._repair_tail()
        if self.ensure_header():
            return
        found = report_labels(self.path)
        if found and found != self.labels:
            raise ReportMismatch(
                f"{self.path} was written for classes {', '.join(found)}, the model has "
                f"{', '.join(self.labels)}; choose another --report"
            )

    def ensure_header(self) -> bool:
        """Start an empty (or rotated-away) report with its header; True if it was empty."""
        if self.size() > 0:
            return False
        if self.format == "csv":
            self.append(_csv_line(watch_header(self.labels)))
        else:  # JSON lines have no header; the file still exists from the start
            self.append("")
        return True

    def _repair_tail(self) -> None:
        with open(self.path, "rb") as handle:
            data = handle.read()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("report %s: cutting a torn last line (%d bytes)", self.path, len(data) - keep)
        self.truncate(keep)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def present(self, rows: Sequence[tuple[int, str]]) -> list[bool]:
        """For each (byte offset, text): whether `text` is in the file at that offset. One read
        of the span they cover (a batch's rows lie side by side)."""
        wanted = [(offset, text.encode("utf-8")) for offset, text in rows]
        if not wanted:
            return []
        start = min(offset for offset, _ in wanted)
        end = max(offset + len(data) for offset, data in wanted)
        try:
            with open(self.path, "rb") as handle:
                handle.seek(start)
                span = handle.read(end - start)
        except FileNotFoundError:
            return [False] * len(wanted)
        return [span[at - start : at - start + len(data)] == data for at, data in wanted]

    def truncate(self, size: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, text: str) -> None:
        """Append and fsync. Opened per call, so a rotated report is simply started afresh."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = memoryview(text.encode("utf-8"))
            while data:
                written = os.write(fd, data)
                data = data[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
