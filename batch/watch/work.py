"""The watch daemon's work on one batch: classify, place, report, each step journaled first.

`BatchWork.advance(entries)` takes journal entries in any state and carries each one to `reported`
(or `superseded`). A fresh batch and the leftovers of a crash go through the same code, so
recovery is not a separate, rarely-run path: it is the normal path started half way.
Where each file goes and what is kept of its classification: `batch.watch.outcome`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

from batch.backends import Backend
from batch.fsutil import fsync_dir
from batch.summary import Tally
from batch.watch.entry import CLASSIFIED, PLACED, REPORTED, SEEN, SUPERSEDED, Entry
from batch.watch.journal import Journal
from batch.watch.outcome import destination_folder, outcome_row, stored_outcome
from batch.watch.placement import Collision, State, check, free_name
from batch.watch.placement import place as place_file
from batch.watch.predict import VANISHED_ERROR, Predictor, Rows
from batch.watch.report import AppendReport, render

log = logging.getLogger(__name__)


def _tmp_name(entry: Entry) -> str:
    return f".clfwatch-{entry.id}.tmp"


class BatchWork:
    """Owns the journal, the report, the running tally and the predictor (with the backend);
    used by the main loop only."""

    def __init__(
        self,
        *,
        backend: Backend,
        journal: Journal,
        report: AppendReport,
        tally: Tally,
        out: Path,
        min_confidence: float,
        top_k: int,
        threads: int = 2,
    ) -> None:
        self.journal = journal
        self.report = report
        self.tally = tally
        self.out = out
        self.min_confidence = min_confidence
        self.top_k = top_k
        self.predictor = Predictor(backend, top_k=top_k, threads=threads)
        self._fresh: set[int] = set()  # classified by this process, not yet placed
        self._folders: set[Path] = set()  # destination folders known to exist
        self._listings: dict[Path, set[str]] = {}  # names in destination folders

    @property
    def backend(self) -> Backend:
        return self.predictor.backend

    @backend.setter
    def backend(self, backend: Backend) -> None:
        self.predictor.backend = backend

    def close(self) -> None:
        self.predictor.close()

    def drop_prefetched(self) -> None:
        """After a failure: forget what was read ahead; recovery starts from the journal."""
        self.predictor.drop()
        self._fresh.clear()

    def advance(self, entries: Sequence[Entry], predicted: Rows | None = None) -> list[Entry]:
        """Carry every entry to its final state; returns the ones reported. `predicted`: the
        rows `predict` made for them (the ones in state seen), if it already ran.

        The steps are public so that tests can stop between them, as a crash would.
        """
        if seen := [e for e in entries if e.state == SEEN]:
            self.record(seen, predicted if predicted is not None else self.predictor.predict(seen))
        if classified := [e for e in entries if e.state == CLASSIFIED]:
            self.place(classified)
        placed = [e for e in entries if e.state == PLACED]
        if placed:
            self.report_rows(placed)
        return placed

    # -- classify ---------------------------------------------------------------------------

    def classify(self, entries: list[Entry]) -> None:
        self.record(entries, self.predictor.predict(entries))

    def predict_ahead(self, entries: list[Entry]) -> Future[Rows]:
        """Read, decode and classify this batch while the previous one is finished."""
        return self.predictor.predict_ahead(entries)

    def record(self, entries: list[Entry], rows: Rows) -> None:
        """Plan each file's destination and commit the outcomes (before anything moves)."""
        reserved = self.journal.reserved_destinations()
        changed = []
        for entry, row in zip(entries, rows, strict=True):
            if row is None:
                changed.append(entry)
                continue
            folder = destination_folder(row, self.min_confidence)
            entry.outcome = stored_outcome(row, folder)
            entry.dest = self._plan(entry, folder, reserved)
            if entry.dest is not None:
                reserved.add(entry.dest)
                self._fresh.add(entry.id)
        if changed:
            self.journal.mark(changed, SUPERSEDED)
        self.journal.mark_classified([e for e in entries if e.state == SEEN])

    def _plan(self, entry: Entry, folder: str | None, reserved: set[Path]) -> Path | None:
        if folder is None or entry.action == "none":
            return None
        return free_name(self.out / folder, entry.source.name, reserved, self._listed)

    def _listed(self, path: Path) -> bool:
        """Whether `path` exists, from one listing of its folder per process (see free_name)."""
        names = self._listings.get(path.parent)
        if names is None:
            try:
                names = set(os.listdir(path.parent))
            except FileNotFoundError:
                names = set()
            self._listings[path.parent] = names
        return path.name in names

    # -- place ------------------------------------------------------------------------------

    def place(self, entries: list[Entry]) -> None:
        touched: set[Path] = set()
        superseded = []
        for entry in entries:
            state = self._place_one(entry)
            if state is State.CHANGED:
                superseded.append(entry)
                continue
            if state is State.VANISHED and (entry.outcome or {}).get("error") != VANISHED_ERROR:
                row = dataclasses.replace(outcome_row(entry), error=VANISHED_ERROR)
                self.journal.set_outcome(entry, stored_outcome(row, None))
            touched.add(entry.source.parent)
            if entry.dest is not None:
                touched.add(entry.dest.parent)
        for folder in touched:
            if folder.is_dir():
                fsync_dir(folder)
        if superseded:
            self.journal.mark(superseded, SUPERSEDED)
        self._plan_rows([e for e in entries if e.state == CLASSIFIED])

    def _place_fresh(self, entry: Entry) -> bool:
        """Just classified by this process: place it without the recovery checks (`link`
        refuses an existing name by itself). False: take the careful path."""
        if entry.id not in self._fresh or entry.dest is None:
            return False
        self._fresh.discard(entry.id)
        folder = entry.dest.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        try:
            place_file(
                entry.source, entry.dest, entry.action, tmp_name=_tmp_name(entry), make_dir=False
            )
        except (Collision, FileNotFoundError):
            self._folders.discard(folder)
            self._listings.pop(folder, None)
            return False
        if folder in self._listings:
            self._listings[folder].add(entry.dest.name)
        return True

    def _place_one(self, entry: Entry) -> State:
        if self._place_fresh(entry):
            return State.DONE
        while True:
            state = check(entry.source, entry.identity, entry.dest, entry.action, _tmp_name(entry))
            if state is State.VANISHED and entry.dest is not None:
                self.journal.set_dest(entry, None)
            if state is not State.TODO and state is not State.COLLISION:
                return state
            if state is State.TODO:
                assert entry.dest is not None
                try:
                    place_file(entry.source, entry.dest, entry.action, tmp_name=_tmp_name(entry))
                    return State.DONE
                except Collision:  # pragma: no cover - a race: name taken between check() and link
                    pass
            assert entry.dest is not None
            reserved = self.journal.reserved_destinations()
            self.journal.set_dest(entry, free_name(entry.dest.parent, entry.source.name, reserved))

    def _plan_rows(self, entries: list[Entry]) -> None:
        if not entries:  # pragma: no cover - every entry superseded: skips an empty commit
            return
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.report.ensure_header()
        self._set_offsets(entries, self.report.size(), lambda e: self._render(e, stamp))
        self.journal.mark_placed(entries)

    def _render(self, entry: Entry, stamp: str) -> str:
        out = str(self.out) + os.sep
        new_path = str(entry.dest).removeprefix(out).replace(os.sep, "/") if entry.dest else ""
        return render(
            outcome_row(entry),
            time=stamp,
            new_path=new_path,
            labels=self.report.labels,
            fmt=self.report.format,
        )

    @staticmethod
    def _set_offsets(entries: list[Entry], start: int, text: Callable[[Entry], str]) -> None:
        offset = start
        for entry in entries:
            entry.row = text(entry)
            entry.report_offset = offset
            offset += len(entry.row.encode("utf-8"))

    # -- report -----------------------------------------------------------------------------

    def report_rows(self, entries: list[Entry]) -> None:
        present = self.report.present([(e.report_offset or 0, e.row or "") for e in entries])
        missing = [e for e, there in zip(entries, present, strict=True) if not there]
        if missing:
            first = min(e.report_offset or 0 for e in missing)
            if first < self.report.size():
                self.report.truncate(first)  # only ever our own unfinished append
            self.report.ensure_header()
            start = self.report.size()
            if start != first:
                self._set_offsets(missing, start, lambda e: e.row or "")
                self.journal.mark_placed(missing)
            self.report.append("".join(e.row or "" for e in missing))
        self.journal.mark(entries, REPORTED)
        for entry in entries:
            self.tally.add(outcome_row(entry))
