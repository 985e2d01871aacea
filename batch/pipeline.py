"""Files -> decoded batches -> predictions -> report rows, with decoding overlapping inference.

A thread pool reads and preprocesses the next files (Pillow releases the GIL while it decodes
and resizes) while the main thread calls the model on the current batch. Rows come out in the
order the files went in; a file that cannot be read or decoded becomes an error row.

    files = [ImageFile(path, rel, None) for rel, path in walk_images(root)]
    for row in classify_files(backend, files, batch_size=128, top_k=3): writer.write(row)
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batch.backends import Backend
from batch.reader import Read, ReadAhead
from batch.report import ReportRow
from serve.dataplane import top_k as rank
from serve.manifest import Preprocessing
from serve.preprocess import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES

# `make bench-batch` (README): on a shared 2-CPU box, batches of 32-256 32x32x3 images were within
# noise of each other and 512 slower; 128 of them (~400k floats) is the default, scaled by size.
_FLOATS_PER_BATCH = 128 * 32 * 32 * 3
_FILES_PER_TASK = 8  # files one reader task decodes: fewer futures, same overlap


@dataclass(frozen=True)
class ImageFile:
    """A file to classify: where it is, how the report names it, its true label if known."""

    path: Path
    relative: str
    true_label: str | None = None


@dataclass
class WalkCounts:
    """What a walk saw besides images (filled in as the walk proceeds)."""

    images: int = 0
    skipped: int = 0  # regular files without an image suffix, and special files


def default_workers() -> int:
    """Reader threads when none are asked for: one per CPU, at most 4."""
    return min(4, os.cpu_count() or 1)


def preferred_batch_size(pre: Preprocessing) -> int:
    """The batch size used when none is given: a power of two between 8 and 256."""
    per_image = pre.size[0] * pre.size[1] * pre.channels
    size = 8
    while size < 256 and (size * 2) * per_image <= _FLOATS_PER_BATCH:
        size *= 2
    return size


def walk_images(
    root: Path, *, recursive: bool = True, counts: WalkCounts | None = None
) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every image under `root`, sorted, streamed.

    Each directory is listed and sorted on its own, so memory stays bounded by the largest
    directory. Hidden entries (names starting with ".") are ignored; non-image files are counted
    in `counts.skipped`.
    """
    counts = counts if counts is not None else WalkCounts()
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = prefix + entry.name
            try:
                if entry.is_dir():
                    subfolders.append((Path(entry.path), relative + "/"))
                    continue
                regular = entry.is_file()
            except OSError:
                regular = False
            if regular and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                counts.images += 1
                yield relative, Path(entry.path)
            else:
                counts.skipped += 1
        if recursive:
            # Files of a folder first, then its sub-folders in name order (stack: reversed).
            stack.extend(reversed(subfolders))


def rows_for(
    backend: Backend, items: Sequence[ImageFile], probs: np.ndarray, top_k: int
) -> list[ReportRow]:
    """Report rows for classified files from their probabilities."""
    rows = []
    for item, p, top in zip(items, probs.tolist(), rank(probs, backend.labels, top_k), strict=True):
        rows.append(
            ReportRow(
                path=item.relative,
                model=backend.model,
                version=backend.version,
                predicted=top[0][0],
                confidence=top[0][1],
                top_k=tuple(top),
                probabilities=tuple(p),
                true_label=item.true_label,
            )
        )
    return rows


def error_row(backend: Backend, item: ImageFile, error: str) -> ReportRow:
    """The row of a file that could not be classified."""
    return ReportRow(
        path=item.relative,
        model=backend.model,
        version=backend.version,
        true_label=item.true_label,
        error=error,
    )


def classify_chunk(
    backend: Backend, items: Sequence[ImageFile], reads: Sequence[Read], top_k: int
) -> list[ReportRow | None]:
    """One model call for the files that were read; an error row for the others, and None
    where the reader's check rejected the file. Rows in the order of `items`."""
    good = [(i, read) for i, read in enumerate(reads) if isinstance(read, np.ndarray)]
    rows: list[ReportRow | None] = [
        error_row(backend, item, read) if isinstance(read, str) else None
        for item, read in zip(items, reads, strict=True)
    ]
    if good:
        probs = backend.classify(np.stack([read for _, read in good]))
        classified = [items[i] for i, _ in good]
        for (i, _), row in zip(good, rows_for(backend, classified, probs, top_k), strict=True):
            rows[i] = row
    return rows


def classify_files(
    backend: Backend,
    files: Iterable[ImageFile],
    *,
    batch_size: int | None = None,
    top_k: int = 3,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[ReportRow]:
    """Classify `files` in order, `batch_size` decoded images per model call.

    Up to a few batches of files are read and decoded ahead by `workers` threads while the
    model runs. Every file yields exactly one row, in input order.
    """
    pre = backend.preprocessing
    size = batch_size or preferred_batch_size(pre)
    workers = workers or default_workers()
    per_task = max(1, min(_FILES_PER_TASK, size))
    ahead = max(2 * size, 4 * workers * per_task) // per_task  # tasks in flight
    source = iter(files)
    window: deque[tuple[list[ImageFile], Future[list[Read]]]] = deque()
    ready: deque[tuple[ImageFile, Read]] = deque()
    pool = ReadAhead(workers, max_pixels=max_pixels)
    try:

        def refill() -> None:
            while len(window) < ahead:
                items = list(itertools.islice(source, per_task))
                if not items:
                    return
                window.append((items, pool.submit([item.path for item in items], pre)))

        refill()
        while window or ready:
            images = sum(not isinstance(read, str) for _, read in ready)
            while window and images < size:
                items, future = window.popleft()
                reads = future.result()
                refill()
                ready.extend(zip(items, reads, strict=True))
                images += sum(not isinstance(read, str) for read in reads)
            chunk = []
            taken = 0
            while ready and taken < size:
                item, read = ready.popleft()
                chunk.append((item, read))
                taken += not isinstance(read, str)
            items = [item for item, _ in chunk]
            rows = classify_chunk(backend, items, [read for _, read in chunk], top_k)
            yield from (row for row in rows if row is not None)
    finally:
        pool.close()
