"""The watch daemon's journal: every inbox file's progress, in SQLite (WAL mode, synchronous=FULL).

Each file walks `seen -> classified -> placed -> reported`; `superseded` (it changed after we saw
it: it is picked up again as a new arrival) is the other terminal state. Every transition is one
committed transaction, written before the action it announces (a destination is recorded before
the file is moved there, a report row and its byte offset before it is appended), so after a
crash at any instant the daemon can tell what was done and finish it exactly once. The rows come
back as `batch.watch.entry.Entry`.

    journal = Journal(outdir / ".clfwatch" / "journal.sqlite")
    ids = journal.add_seen([NewFile(...)])
    for entry in journal.unfinished(): ...
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from batch.fsutil import Identity
from batch.watch.entry import CLASSIFIED, PLACED, SEEN, Entry, NewFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,          -- absolute path in the inbox when it was seen
    rel TEXT NOT NULL,             -- that path relative to the inbox (the report's `path`)
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    state TEXT NOT NULL,
    action TEXT NOT NULL,          -- move, copy, link or none, fixed when the file is seen
    true_label TEXT,
    seen_at REAL NOT NULL,         -- wall-clock time the file was taken into a batch
    outcome TEXT,                  -- JSON of the classification (batch.watch.work); NULL once final
    dest TEXT,                     -- planned destination (absolute), NULL when not placed
    row TEXT,                      -- its exact report line; NULL once final
    report_offset INTEGER,         -- where that row starts in the report
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_source ON files(source);
CREATE INDEX IF NOT EXISTS files_open ON files(state) WHERE state NOT IN ('reported', 'superseded');
-- (queries repeat that condition literally, so that SQLite can use the partial index)
"""

_OPEN = "state NOT IN ('reported', 'superseded')"


_COLUMNS = (
    "id, source, rel, size, mtime_ns, inode, state, action, true_label, seen_at, outcome, dest, "
    "row, report_offset"
)


def _entry(record: sqlite3.Row | tuple[Any, ...]) -> Entry:
    ident, source, rel, size, mtime, inode, state, action = record[:8]
    truth, seen, outcome, dest, row, offset = record[8:]
    identity = (size, mtime, inode)
    outcome = json.loads(outcome) if outcome else None
    dest = Path(dest) if dest else None
    return Entry(
        ident, Path(source), rel, identity, state, action, truth, seen, outcome, dest, row, offset
    )


class Journal:
    """A single-writer SQLite journal. Not thread-safe: the daemon's main loop owns it.

    WAL mode keeps each commit to one sequential append plus an fsync (synchronous=FULL), readers
    (an operator's `sqlite3` shell) never block the daemon, and a commit is atomic even if the
    process is killed half way through writing it.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._durable = True
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _durability(self, durable: bool) -> None:
        """FULL: the commit is fsynced before it returns. NORMAL (WAL): it survives a killed
        process, and the next FULL commit makes it durable too. Only commits that announce an
        action on files (a move, a report append) have to be FULL."""
        if durable != self._durable:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable

    def _transaction(
        self, sql: str, params: Iterable[Sequence[Any]], *, durable: bool = True
    ) -> None:
        self._durability(durable)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(sql, params)

    def known(self, files: Sequence[tuple[Path, Identity]]) -> set[Path]:
        """Which of these file versions were already taken in and are still ours to finish or
        to leave alone. A moved file that comes back (someone put it in the inbox again to have
        it re-processed) is a new arrival, even with the same inode and mtime."""
        wanted = {str(path): identity for path, identity in files}
        found: set[Path] = set()
        names = list(wanted)
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            rows = self._db.execute(
                "SELECT source, size, mtime_ns, inode FROM files WHERE source IN "
                f"({', '.join('?' * len(chunk))}) AND state != 'superseded' "
                "AND NOT (action = 'move' AND state = 'reported')",
                chunk,
            ).fetchall()
            found.update(Path(src) for src, *identity in rows if tuple(identity) == wanted[src])
        return found

    def add_seen(self, files: Sequence[NewFile]) -> list[Entry]:
        """Record a batch of new arrivals in one transaction; returns their entries."""
        now = time.time()
        self._durability(False)  # nothing has been done to the files yet
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            (last,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM files").fetchone()
            entries = [
                Entry(last + i, n.source, n.rel, n.identity, SEEN, n.action, n.true_label, now)
                for i, n in enumerate(files, start=1)
            ]
            self._db.executemany(
                "INSERT INTO files (id, source, rel, size, mtime_ns, inode, state, action, "
                "true_label, seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.id,
                        str(e.source),
                        e.rel,
                        *e.identity,
                        SEEN,
                        e.action,
                        e.true_label,
                        now,
                        now,
                    )
                    for e in entries
                ],
            )
        return entries

    def mark_classified(self, entries: Sequence[Entry]) -> None:
        """Store each entry's outcome and planned destination (set on the entries beforehand)."""
        now = time.time()
        self._transaction(
            "UPDATE files SET state = ?, outcome = ?, dest = ?, updated_at = ? WHERE id = ?",
            [
                (CLASSIFIED, json.dumps(e.outcome), str(e.dest) if e.dest else None, now, e.id)
                for e in entries
            ],
        )
        for entry in entries:
            entry.state = CLASSIFIED

    def set_dest(self, entry: Entry, dest: Path | None) -> None:
        """Re-plan one destination (a collision, or a file that vanished: None)."""
        value = str(dest) if dest else None
        self._transaction(
            "UPDATE files SET dest = ?, updated_at = ? WHERE id = ?",
            [(value, time.time(), entry.id)],
        )
        entry.dest = dest

    def set_outcome(self, entry: Entry, outcome: dict[str, Any]) -> None:
        self._transaction(
            "UPDATE files SET outcome = ?, updated_at = ? WHERE id = ?",
            [(json.dumps(outcome), time.time(), entry.id)],
        )
        entry.outcome = outcome

    def mark_placed(self, entries: Sequence[Entry]) -> None:
        """Record each entry's report row and offset (set beforehand): the row is appended next."""
        now = time.time()
        self._transaction(
            "UPDATE files SET state = ?, row = ?, report_offset = ?, updated_at = ? WHERE id = ?",
            [(PLACED, e.row, e.report_offset, now, e.id) for e in entries],
        )
        for entry in entries:
            entry.state = PLACED

    def mark(self, entries: Sequence[Entry], state: str) -> None:
        """Move entries to a final state (reported, superseded), dropping what recovery needed.

        Not fsynced: if a power cut loses it, recovery finds the row in the report again.
        """
        now = time.time()
        self._transaction(
            "UPDATE files SET state = ?, outcome = NULL, row = NULL, updated_at = ? WHERE id = ?",
            [(state, now, e.id) for e in entries],
            durable=False,
        )
        for entry in entries:
            entry.state = state

    def unfinished(self) -> list[Entry]:
        """Entries a crash or an error left between `seen` and `reported`, oldest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE {_OPEN} ORDER BY id"
        ).fetchall()
        return [_entry(row) for row in rows]

    def reserved_destinations(self) -> set[Path]:
        """Destinations planned by unfinished entries (a new plan must not take them)."""
        rows = self._db.execute(
            f"SELECT dest FROM files WHERE {_OPEN} AND dest IS NOT NULL"
        ).fetchall()
        return {Path(dest) for (dest,) in rows}
