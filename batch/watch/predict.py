"""Files -> report rows for the watch daemon, off the main thread: the shared reader pool reads
and decodes (`batch.reader`), one model thread calls the backend.

It touches neither the journal nor any file but the ones it reads, so it can work on the next
batch while the main thread records, places and reports the current one.

    predictor = Predictor(backend, top_k=3)
    future = predictor.predict_ahead(entries)    # ... later: rows = future.result()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from batch.backends import Backend
from batch.fsutil import identity_of
from batch.pipeline import ImageFile, classify_chunk
from batch.reader import Read, ReadAhead
from batch.report import ReportRow
from batch.watch.entry import Entry

VANISHED_ERROR = "file vanished from the inbox before it was placed"
Rows = list[ReportRow | None]  # None: the file changed after it was seen


class Predictor:
    """Reads, decodes and classifies batches of journal entries in background threads."""

    def __init__(self, backend: Backend, *, top_k: int, threads: int = 2) -> None:
        self.backend = backend  # replaced between batches when a new version is picked up
        self.top_k = top_k
        self._pool = ReadAhead(threads, name="clfwatch-read", vanished=VANISHED_ERROR)
        self._model = ThreadPoolExecutor(1, thread_name_prefix="clfwatch-model")
        self._ahead: Future[Rows] | None = None
        self._reads: dict[int, Future[list[Read]]] = {}

    def close(self) -> None:
        self._model.shutdown(wait=True, cancel_futures=True)
        self._pool.close()

    def prefetch(self, entries: Sequence[Entry]) -> None:
        """Start reading and decoding these files (None for one that changed since seen)."""
        pre = self.backend.preprocessing
        for entry in entries:
            if entry.id not in self._reads:

                def same(_: Path, stat: os.stat_result, seen: Entry = entry) -> bool:
                    return identity_of(stat) == seen.identity

                self._reads[entry.id] = self._pool.submit([entry.source], pre, same)

    def drop(self) -> None:
        """After a failure: forget what was read ahead (recovery starts from the journal)."""
        if self._ahead is not None:
            wait([self._ahead])  # it may still be taking reads out of the table
            self._ahead = None
        for future in self._reads.values():
            future.cancel()  # pragma: no cover - left only by a predict that raised part way
        self._reads.clear()

    def predict(self, entries: Sequence[Entry]) -> Rows:
        """Each file's row: a prediction, or an error row (undecodable, unreadable, gone)."""
        self.prefetch(entries)
        reads = [self._reads.pop(e.id).result()[0] for e in entries]
        items = [ImageFile(e.source, e.rel, e.true_label) for e in entries]
        return classify_chunk(self.backend, items, reads, self.top_k)

    def predict_ahead(self, entries: Sequence[Entry]) -> Future[Rows]:
        """`predict` in the model thread."""
        self.prefetch(entries)
        self._ahead = self._model.submit(self.predict, entries)
        return self._ahead
