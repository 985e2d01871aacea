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
READ_CHUNK = 8  # files per reader task


class Predictor:
    """Reads, decodes and classifies batches of journal entries in background threads."""

    def __init__(self, backend: Backend, *, top_k: int, threads: int = 2) -> None:
        self.backend = backend  # replaced between batches when a new version is picked up
        self.top_k = top_k
        self._pool = ReadAhead(threads, name="clfwatch-read", vanished=VANISHED_ERROR)
        self._model = ThreadPoolExecutor(1, thread_name_prefix="clfwatch-model")
        self._ahead: Future[Rows] | None = None
        self._reads: dict[int, tuple[Future[list[Read]], int]] = {}  # entry id -> its read

    def close(self) -> None:
        self._model.shutdown(wait=True, cancel_futures=True)
        self._pool.close()

    def prefetch(self, entries: Sequence[Entry]) -> None:
        """Start reading and decoding these files (None for one that changed since seen), a few
        per reader task: a task per file cost the main thread 8 % of a burst (py-spy)."""
        chunk: dict[Path, Entry] = {}  # one path once per task: its check knows one identity
        for entry in entries:
            if entry.id in self._reads:
                continue
            if len(chunk) == READ_CHUNK or entry.source in chunk:
                self._submit(list(chunk.values()))
                chunk = {}
            chunk[entry.source] = entry
        if chunk:
            self._submit(list(chunk.values()))

    def _submit(self, chunk: list[Entry]) -> None:
        seen = {e.source: e.identity for e in chunk}

        def same(path: Path, stat: os.stat_result) -> bool:
            return identity_of(stat) == seen[path]

        future = self._pool.submit(list(seen), self.backend.preprocessing, same)
        for index, entry in enumerate(chunk):
            self._reads[entry.id] = (future, index)

    def drop(self) -> None:
        """After a failure: forget what was read ahead (recovery starts from the journal)."""
        if self._ahead is not None:
            wait([self._ahead])  # it may still be taking reads out of the table
            self._ahead = None
        for future, _ in self._reads.values():
            future.cancel()  # pragma: no cover - left only by a predict that raised part way
        self._reads.clear()

    def predict(self, entries: Sequence[Entry]) -> Rows:
        """Each file's row: a prediction, or an error row (undecodable, unreadable, gone)."""
        self.prefetch(entries)
        reads = []
        for entry in entries:
            future, index = self._reads.pop(entry.id)
            reads.append(future.result()[index])
        items = [ImageFile(e.source, e.rel, e.true_label) for e in entries]
        return classify_chunk(self.backend, items, reads, self.top_k)

    def predict_ahead(self, entries: Sequence[Entry]) -> Future[Rows]:
        """`predict` in the model thread."""
        self.prefetch(entries)
        self._ahead = self._model.submit(self.predict, entries)
        return self._ahead
