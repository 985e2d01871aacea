"""Files -> report rows for the watch daemon, off the main thread: a reader pool reads and
decodes (the shared `serve.preprocess`), one model thread calls the backend.

It touches neither the journal nor any file but the ones it reads, so it can work on the next
batch while the main thread records, places and reports the current one.

    predictor = Predictor(backend, top_k=3)
    future = predictor.predict_ahead(entries)    # ... later: rows = future.result()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np

from batch.backends import Backend
from batch.journal import Entry
from batch.pipeline import ImageFile, rows_for
from batch.report import ReportRow
from serve.errors import ServeError
from serve.preprocess import preprocess_bytes

VANISHED_ERROR = "file vanished from the inbox before it was placed"
Rows = list[ReportRow | None]  # None: the file changed after it was seen


class Predictor:
    """Reads, decodes and classifies batches of journal entries in background threads."""

    def __init__(self, backend: Backend, *, top_k: int, threads: int = 2) -> None:
        self.backend = backend  # replaced between batches when a new version is picked up
        self.top_k = top_k
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="clfwatch-read")
        self._model = ThreadPoolExecutor(1, thread_name_prefix="clfwatch-model")
        self._ahead: Future[Rows] | None = None
        self._reads: dict[int, Future[np.ndarray | str | None]] = {}

    def close(self) -> None:
        self._model.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def prefetch(self, entries: Sequence[Entry]) -> None:
        """Start reading and decoding these files."""
        for entry in entries:
            if entry.id not in self._reads:
                self._reads[entry.id] = self._pool.submit(self._read, entry)

    def drop(self) -> None:
        """After a failure: forget what was read ahead (recovery starts from the journal)."""
        if self._ahead is not None:
            wait([self._ahead])  # it may still be taking reads out of the table
            self._ahead = None
        for future in self._reads.values():
            future.cancel()
        self._reads.clear()

    def _read(self, entry: Entry) -> np.ndarray | str | None:
        """The model input, an error text, or None if the file changed since it was seen."""
        try:
            with open(entry.source, "rb") as handle:
                data = handle.read()
                stat = os.fstat(handle.fileno())
        except FileNotFoundError:
            return VANISHED_ERROR
        except OSError as exc:
            return f"cannot read file: {exc.strerror or exc}"
        if (stat.st_size, stat.st_mtime_ns, stat.st_ino) != entry.identity:
            return None
        try:
            return preprocess_bytes(data, self.backend.preprocessing)
        except ServeError as exc:
            return str(exc)

    def predict(self, entries: Sequence[Entry]) -> Rows:
        """Each file's row: a prediction, or an error row (undecodable, unreadable, gone)."""
        self.prefetch(entries)
        results = [self._reads.pop(e.id).result() for e in entries]
        good = [(e, r) for e, r in zip(entries, results, strict=True) if isinstance(r, np.ndarray)]
        rows: dict[int, ReportRow] = {}
        if good:
            probs = self.backend.classify(np.stack([r for _, r in good]))
            items = [ImageFile(e.source, e.rel, e.true_label) for e, _ in good]
            predicted = rows_for(self.backend, items, probs, self.top_k)
            rows = {entry.id: row for (entry, _), row in zip(good, predicted, strict=True)}
        return [
            None
            if result is None
            else rows.get(entry.id)
            or ReportRow(
                path=entry.rel,
                model=self.backend.model,
                version=self.backend.version,
                true_label=entry.true_label,
                error=str(result),
            )
            for entry, result in zip(entries, results, strict=True)
        ]

    def predict_ahead(self, entries: Sequence[Entry]) -> Future[Rows]:
        """`predict` in the model thread."""
        self.prefetch(entries)
        self._ahead = self._model.submit(self.predict, entries)
        return self._ahead
