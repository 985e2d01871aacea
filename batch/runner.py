"""One `clfbatch run`: a folder and a backend -> a committed report and, with labels, a summary.

options = RunOptions(folder=Path("images"), out=Path("images-cifar10.csv"))
result = run_folder(options, open_backend("cifar10"), warn=print)
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batch.backends import Backend
from batch.pipeline import ImageFile, WalkCounts, classify_files, walk_images
from batch.progress import make_progress
from batch.report import ReportFormat, ReportWriter
from batch.summary import Tally, write_summary

EXIT_OK, EXIT_FILE_ERRORS, EXIT_USAGE, EXIT_SERVER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_LABEL_COLUMNS = ("label", "true_label", "class", "y_true")
_PROGRESS_STEP = 32


class BatchError(Exception):
    """A problem the user can fix: printed as one line, the process exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RunOptions:
    folder: Path
    out: Path
    labels: str = "auto"  # "auto", "none" or a CSV file of path,label
    recursive: bool = True
    batch_size: int | None = None
    top_k: int = 3
    format: ReportFormat = "csv"
    quiet: bool = False
    workers: int | None = None


@dataclass
class RunResult:
    report: Path
    tally: Tally
    skipped: int
    elapsed: float
    summary_files: list[Path] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tally.files / self.elapsed if self.elapsed > 0 else 0.0

    def summary_line(self) -> str:
        tally = self.tally
        metrics = tally.metrics()
        accuracy = (
            f", accuracy {metrics.accuracy:.4f} ({metrics.correct}/{metrics.total} labelled)"
            if metrics
            else ""
        )
        return (
            f"{tally.files} files, {tally.classified} classified, {tally.errors} errors, "
            f"{self.skipped} non-image files skipped{accuracy}, {self.elapsed:.1f} s, "
            f"{self.rate:,.0f} images/s"
        )


def count_images(folder: Path, recursive: bool) -> WalkCounts:
    """Count images and skipped files; raises BatchError if `folder` is missing or has no image."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise BatchError(f"{folder} {what}")
    counts = WalkCounts()
    for _ in walk_images(folder, recursive=recursive, counts=counts):
        pass
    if counts.images == 0:
        hint = "" if recursive else " (sub-folders are not searched with --no-recursive)"
        raise BatchError(
            f"no images in {folder}: {counts.skipped} other files{hint}; image suffixes are "
            ".png .jpg .jpeg .bmp .gif .webp .tif .tiff"
        )
    return counts


def read_labels_file(path: Path) -> dict[str, str]:
    """`path,label` rows (header optional; paths relative to the folder) -> {path: label}."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            records = [r for r in csv.reader(handle) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise BatchError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    path_col, label_col = 0, 1
    if records:
        header = [c.strip().lower() for c in records[0]]
        if "path" in header or any(name in header for name in _LABEL_COLUMNS):
            path_col = header.index("path") if "path" in header else 0
            label_col = next((header.index(n) for n in _LABEL_COLUMNS if n in header), 1)
            records = records[1:]
    labels = {}
    for number, record in enumerate(records, start=1):
        if len(record) <= max(path_col, label_col):
            raise BatchError(f"{path}: row {number} needs a path and a label: {record}")
        labels[Path(record[path_col].strip()).as_posix()] = record[label_col].strip()
    return labels


def label_source(
    spec: str, classes: tuple[str, ...], warn: Callable[[str], None]
) -> Callable[[str], str | None]:
    """relative path -> true label, for `--labels auto|none|FILE.csv`."""
    if spec == "none":
        return lambda relative: None
    if spec == "auto":
        known = set(classes)

        def from_folder(relative: str) -> str | None:
            parts = relative.split("/")
            return parts[-2] if len(parts) > 1 and parts[-2] in known else None

        return from_folder
    mapping = read_labels_file(Path(spec))
    unknown = sorted(set(mapping.values()) - set(classes))
    if unknown:
        warn(
            f"warning: {spec} names classes the model does not have: {', '.join(unknown)} "
            f"(model classes: {', '.join(classes)}); those files are left out of the metrics"
        )
    return lambda relative: mapping.get(relative)


def _files(options: RunOptions, truth: Callable[[str], str | None]) -> Iterator[ImageFile]:
    for relative, path in walk_images(options.folder, recursive=options.recursive):
        yield ImageFile(path, relative, truth(relative))


def run_folder(
    options: RunOptions,
    backend: Backend,
    *,
    warn: Callable[[str], None],
    counts: WalkCounts | None = None,
) -> RunResult:
    """Classify the folder into the report; write the summary files when labels are known.

    An exception (Ctrl-C, a server that went away) leaves only `<report>.partial`.
    """
    counts = counts or count_images(options.folder, options.recursive)
    truth = label_source(options.labels, backend.labels, warn)
    tally = Tally(backend.labels)
    started = time.monotonic()
    with (
        ReportWriter(options.out, backend.labels, options.format) as writer,
        make_progress(counts.images, quiet=options.quiet) as progress,
    ):
        rows = classify_files(
            backend,
            _files(options, truth),
            batch_size=options.batch_size,
            top_k=options.top_k,
            workers=options.workers,
        )
        done = errors = 0
        for row in rows:
            writer.write(row)
            tally.add(row)
            done += 1
            errors += row.error is not None
            if done >= _PROGRESS_STEP:
                progress.advance(done, errors)
                done = errors = 0
        progress.advance(done, errors)
        writer.commit()
    result = RunResult(options.out, tally, counts.skipped, time.monotonic() - started)
    if tally.unknown_labels:
        names = ", ".join(sorted(tally.unknown_labels))
        warn(f"warning: {sum(tally.unknown_labels.values())} files have unknown labels: {names}")
    metrics = tally.metrics()
    if metrics is not None:
        extra = {
            "report": str(options.out),
            "model": backend.model,
            "version": backend.version,
            "files": tally.files,
            "errors": tally.errors,
            "elapsed_seconds": round(result.elapsed, 3),
        }
        result.summary_files = write_summary(metrics, summary_prefix(options.out), extra)
    return result


def summary_prefix(report: Path) -> Path:
    """`run.csv` -> `run` (the summary files are `run.summary.txt`, ...)."""
    return report.with_suffix("") if report.suffix else report
