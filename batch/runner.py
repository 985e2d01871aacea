"""One `clfbatch run`: a folder and a backend -> a committed report and, with labels, a summary.

options = RunSettings(folder=Path("images"), model="cifar10", out=Path("images-cifar10.csv"))
result = run_folder(options, open_backend("cifar10"), warn=print)
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from batch.backends import Backend
from batch.embeddings import recording
from batch.errors import BatchError
from batch.labels import label_source
from batch.model_choice import ModelChoice
from batch.options import Arg, Opt
from batch.pipeline import ImageFile, WalkCounts, classify_files, walk_images
from batch.progress import make_progress
from batch.report import ReportFormat, ReportWriter
from batch.summary import Tally, write_report_summary

_PROGRESS_STEP = 32


class Format(enum.StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class Engine(enum.StrEnum):
    """Where the files are classified: in this process, or by Ray actors (batch.ray_engine)."""

    local = "local"
    ray = "ray"


@dataclass(frozen=True)
class RunSettings(ModelChoice):
    """Every option of `clfbatch run` (each also a `CLFBATCH_*` variable, see batch.options)."""

    folder: Annotated[Path, Arg("Folder of images to classify.")]
    version: Annotated[int | None, Opt("Model version (default: the default one).")] = None
    version_label: Annotated[
        str | None, Opt("Version label instead (e.g. fast: the newest version carrying it).")
    ] = None
    out: Annotated[Path | None, Opt("Report file (default: ./<folder>-<model>.<format>).")] = None
    force: Annotated[bool, Opt("Overwrite an existing report.")] = False
    labels: Annotated[
        str, Opt("True labels: auto (class-named sub-folders), none, or FILE.csv.")
    ] = "auto"
    recursive: Annotated[bool, Opt("Descend into sub-folders.")] = True
    batch_size: Annotated[
        int | None, Opt("Images per model call (default: by input size).", min=1)
    ] = None
    top_k: Annotated[int, Opt("Labels and scores kept per image.", min=1)] = 3
    format: Annotated[Format, Opt("Report format.", ("--format",))] = Format.csv
    quiet: Annotated[bool, Opt("No progress or summary.", ("--quiet", "-q"))] = False
    fail_on_error: Annotated[bool, Opt("Exit 1 when any file could not be classified.")] = False
    workers: Annotated[int | None, Opt("Reader threads (default: min(4, CPUs)).", min=1)] = None
    gallery: Annotated[
        bool, Opt("Also draw <report>.gallery.png/.html: mistakes, then least confident.")
    ] = False
    gallery_size: Annotated[int, Opt("Images in the gallery.", min=1)] = 48
    embeddings: Annotated[
        Path | None,
        Opt("Also write FILE.npy: one float32 vector per classified file (+ FILE.json: order)."),
    ] = None
    engine: Annotated[
        Engine, Opt("local, or ray: a pool of Ray actors (the ray extra, docs/batch.md).")
    ] = Engine.local
    address: Annotated[
        str | None, Opt("With --engine ray: ray://HOST:PORT or auto (default: a local Ray).")
    ] = None
    actors: Annotated[
        int | None, Opt("With --engine ray: model actors (default: one per CPU).", min=1)
    ] = None

    @property
    def report(self) -> Path:
        return self.out or Path.cwd() / f"{self.folder.resolve().name}-{self.model}.{self.format}"

    @property
    def report_format(self) -> ReportFormat:
        return "jsonl" if self.format == Format.jsonl else "csv"


@dataclass
class RunResult:
    report: Path
    tally: Tally
    skipped: int
    elapsed: float
    summary_files: list[Path] = field(default_factory=list)
    embedding_files: list[Path] = field(default_factory=list)  # --embeddings: .npy and .json

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


def _files(options: RunSettings, truth: Callable[[str], str | None]) -> Iterator[ImageFile]:
    for relative, path in walk_images(options.folder, recursive=options.recursive):
        yield ImageFile(path, relative, truth(relative))


def run_folder(
    options: RunSettings,
    backend: Backend,
    *,
    warn: Callable[[str], None],
    counts: WalkCounts | None = None,
) -> RunResult:
    """Classify the folder into the report; write the summary files when labels are known.

    An exception (Ctrl-C, a server that went away) leaves only `<report>.partial`.
    """
    report = options.report
    counts = counts or count_images(options.folder, options.recursive)
    truth = label_source(options.labels, backend.labels, warn)
    tally = Tally(backend.labels)
    started = time.monotonic()
    embedded: list[Path] = []
    with (
        recording(
            options.embeddings, backend, repository=options.repository, server=options.server,
            access=options.access, force=options.force,
        ) as recorder,
        ReportWriter(report, backend.labels, options.report_format) as writer,
        make_progress(counts.images, quiet=options.quiet) as progress,
    ):  # fmt: skip
        rows = classify_files(
            recorder or backend,
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
            if recorder is not None and row.error is None:
                recorder.add_path(row.path)
            if done >= _PROGRESS_STEP:
                progress.advance(done, errors)
                done = errors = 0
        progress.advance(done, errors)
        writer.commit()
        embedded = recorder.commit() if recorder is not None else []
    result = RunResult(report, tally, counts.skipped, time.monotonic() - started)
    result.embedding_files = embedded
    finish_run(result, backend.model, backend.version, warn=warn)
    return result


def finish_run(result: RunResult, model: str, version: int, *, warn: Callable[[str], None]) -> None:
    """After the report is committed (either engine): warn of unknown labels, write the summary."""
    tally = result.tally
    if tally.unknown_labels:
        names = ", ".join(sorted(tally.unknown_labels))
        warn(f"warning: {sum(tally.unknown_labels.values())} files have unknown labels: {names}")
    extra = {
        "model": model,
        "version": version,
        "files": tally.files,
        "errors": tally.errors,
        "elapsed_seconds": round(result.elapsed, 3),
    }
    result.summary_files = write_report_summary(tally, result.report, extra)
