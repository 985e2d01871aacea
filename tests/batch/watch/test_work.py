"""Crash recovery, step by step: the daemon's worker is stopped between its steps (as SIGKILL
would stop it) and a fresh worker on the same journal, report and folders finishes the job."""

from __future__ import annotations

import csv
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from batch.backends import Backend, open_backend
from batch.fsutil import identity_of
from batch.summary import Tally
from batch.watch.entry import PLACED, REPORTED, SUPERSEDED, NewFile
from batch.watch.journal import Journal
from batch.watch.predict import VANISHED_ERROR
from batch.watch.report import AppendReport
from batch.watch.work import BatchWork
from tests.batch.watch.helpers import (
    assert_exactly_once,
    image_bytes,
    placed_files,
    report_rows,
)


@pytest.fixture(scope="module")
def backend(model_repository: Path) -> Iterator[Backend]:
    opened = open_backend("gray", repository=model_repository)
    yield opened
    opened.close()


class Setup:
    """An inbox with images, an output folder, and workers that can be 'killed' at will."""

    def __init__(self, root: Path, backend: Backend, count: int = 6, out: Path | None = None):
        self.backend = backend
        self.inbox, self.out = root / "inbox", out or root / "out"
        self.inbox.mkdir()
        rng = np.random.default_rng(0)
        self.originals = {f"f{i}.png": image_bytes("gray", "dark", rng) for i in range(count)}
        for name, data in self.originals.items():
            (self.inbox / name).write_bytes(data)
        self.report_path = self.out / "labels.csv"
        self.workers: list[BatchWork] = []

    def worker(self) -> BatchWork:
        """A fresh worker, as after a restart (the report is opened and repaired first)."""
        report = AppendReport(self.report_path, self.backend.labels)
        report.open()
        worker = BatchWork(
            backend=self.backend,
            journal=Journal(self.out / ".clfwatch" / "journal.sqlite"),
            report=report,
            tally=Tally(self.backend.labels),
            out=self.out,
            min_confidence=0.0,
            top_k=2,
        )
        self.workers.append(worker)
        return worker

    def seen(self, worker: BatchWork, action: str = "move") -> list:
        files = [
            NewFile(path, path.name, identity_of(path.stat()), action)
            for path in sorted(self.inbox.iterdir())
        ]
        return worker.journal.add_seen(files)

    def restart(self) -> BatchWork:
        worker = self.worker()
        worker.advance(worker.journal.unfinished())
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
            worker.journal.close()

    def check(self) -> list[dict[str, str]]:
        return assert_exactly_once(self.inbox, self.out, self.report_path, self.originals)


@pytest.fixture
def setup(tmp_path: Path, backend: Backend) -> Iterator[Setup]:
    made = Setup(tmp_path, backend)
    yield made
    made.close()


def test_killed_after_seen(setup: Setup) -> None:
    setup.seen(setup.worker())
    setup.restart()
    setup.check()


def test_killed_after_classifying_before_any_folder_was_made(setup: Setup) -> None:
    worker = setup.worker()
    worker.classify(setup.seen(worker))
    assert not any(p.is_dir() for p in setup.out.iterdir() if p.name != ".clfwatch")
    setup.restart()
    setup.check()


def test_killed_between_link_and_unlink(setup: Setup) -> None:
    worker = setup.worker()
    entries = setup.seen(worker)
    worker.classify(entries)
    for entry in entries[:3]:  # the move's first half happened for three files
        entry.dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(entry.source, entry.dest)
    setup.restart()
    setup.check()


@pytest.mark.parametrize("written", ["nothing", "torn", "all"])
def test_killed_while_appending_the_rows(setup: Setup, written: str) -> None:
    worker = setup.worker()
    entries = setup.seen(worker)
    worker.classify(entries)
    worker.place(entries)
    assert all(e.state == PLACED for e in entries)
    text = "".join(e.row for e in entries)
    cut = {"nothing": 0, "torn": len(text) // 2 + 3, "all": len(text)}[written]
    with setup.report_path.open("a") as handle:
        handle.write(text[:cut])
    setup.restart()
    rows = setup.check()
    assert len(rows) == len(setup.originals)


@pytest.mark.parametrize("foreign_kind", ["file", "link to nothing"])
def test_a_foreign_file_at_the_planned_name_is_never_overwritten(
    setup: Setup, foreign_kind: str
) -> None:
    worker = setup.worker()
    entries = setup.seen(worker)
    worker.classify(entries)
    foreign = entries[0].dest
    foreign.parent.mkdir(parents=True, exist_ok=True)
    if foreign_kind == "file":
        foreign.write_bytes(b"someone else's file")
    else:
        foreign.symlink_to(setup.out / "nowhere")
    setup.restart()
    if foreign_kind == "file":
        assert foreign.read_bytes() == b"someone else's file"
    else:
        assert foreign.readlink() == setup.out / "nowhere"
    foreign.unlink()  # so that the exactly-once check sees only ours
    rows = setup.check()
    moved = next(r for r in rows if r["path"] == entries[0].rel)
    assert setup.out / moved["new_path"] == foreign.with_name(f"{foreign.stem}-1{foreign.suffix}")


def test_a_file_rewritten_after_it_was_seen_is_taken_again_as_new(setup: Setup) -> None:
    worker = setup.worker()
    entries = setup.seen(worker)
    target = entries[0].source
    setup.originals[target.name] = b"rewritten: not an image any more"
    target.write_bytes(setup.originals[target.name])
    worker.advance(entries)
    assert entries[0].state == SUPERSEDED
    assert all(e.state == REPORTED for e in entries[1:])
    again = setup.seen(worker)  # only the rewritten file is left in the inbox
    assert [e.rel for e in again] == [target.name]
    worker.advance(again)
    rows = setup.check()
    assert next(r for r in rows if r["path"] == target.name)["error"].startswith("cannot decode")


def test_a_file_rewritten_after_it_was_classified_is_taken_again_as_new(setup: Setup) -> None:
    """Killed after classifying, and the file rewritten before the restart: the stored
    classification is not for this version, so it is not placed but superseded."""
    worker = setup.worker()
    entries = setup.seen(worker)
    worker.classify(entries)
    target = entries[0].source
    setup.originals[target.name] = b"rewritten: not an image any more"
    target.write_bytes(setup.originals[target.name])
    worker = setup.restart()
    assert target.read_bytes() == setup.originals[target.name]
    assert worker.journal.unfinished() == []
    again = setup.seen(worker)  # only the rewritten file is left in the inbox
    assert [e.rel for e in again] == [target.name]
    worker.advance(again)
    rows = setup.check()
    assert next(r for r in rows if r["path"] == target.name)["error"].startswith("cannot decode")


@pytest.mark.parametrize("removed", ["before it was read", "after it was classified"])
def test_a_file_removed_by_someone_else_gets_an_error_row(setup: Setup, removed: str) -> None:
    worker = setup.worker()
    entries = setup.seen(worker)
    if removed == "after it was classified":
        worker.classify(entries)
    entries[0].source.unlink()
    del setup.originals[entries[0].rel]
    worker.advance(entries)
    rows = report_rows(setup.report_path)
    gone = next(r for r in rows if r["path"] == entries[0].rel)
    assert gone["error"] == VANISHED_ERROR and gone["new_path"] == ""
    rows.remove(gone)
    assert len(rows) == len(setup.originals)


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
    reason="needs a second file system",
)
def test_a_move_across_file_systems_copies_then_removes(tmp_path: Path, backend: Backend) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        setup = Setup(tmp_path, backend, out=Path(other) / "out")
        try:
            worker = setup.worker()
            entries = setup.seen(worker)
            worker.classify(entries)
            entries[0].dest.parent.mkdir(parents=True, exist_ok=True)
            entries[0].dest.write_bytes(entries[0].source.read_bytes())  # copied, then killed
            setup.restart()
            setup.check()
        finally:
            setup.close()


def test_a_moved_file_put_back_in_the_inbox_is_taken_again(setup: Setup) -> None:
    worker = setup.worker()
    entries = setup.seen(worker)
    worker.advance(entries)
    first = entries[0]
    assert first.dest is not None and not first.source.exists()
    first.dest.rename(first.source)  # same inode, size and mtime as when it was taken
    assert not worker.journal.known([(first.source, identity_of(first.source.stat()))])
    worker.advance(setup.seen(worker))
    rows = [r for r in report_rows(setup.report_path) if r["path"] == first.rel]
    assert len(rows) == 2 and not first.source.exists()
    assert (setup.out / rows[1]["new_path"]).read_bytes() == setup.originals[first.rel]


def test_copied_files_are_known_and_never_taken_twice(setup: Setup) -> None:
    worker = setup.worker()
    worker.advance(setup.seen(worker, action="copy"))
    files = [(path, identity_of(path.stat())) for path in setup.inbox.iterdir()]
    assert worker.journal.known(files) == {path for path, _ in files}


def test_a_file_whose_inbox_folder_was_removed_gets_an_error_row(setup: Setup) -> None:
    worker = setup.worker()
    folder = setup.inbox / "sub"
    folder.mkdir()
    source = folder / "a.png"
    source.write_bytes(setup.originals["f0.png"])
    new = NewFile(source, "sub/a.png", identity_of(source.stat()), "move")
    entries = worker.journal.add_seen([new])
    worker.classify(entries)
    shutil.rmtree(folder)
    worker.advance(entries)
    (row,) = report_rows(setup.report_path)
    assert (row["path"], row["error"], row["new_path"]) == ("sub/a.png", VANISHED_ERROR, "")
    assert worker.journal.unfinished() == []


def test_action_none_reports_each_file_and_leaves_it_where_it_is(setup: Setup) -> None:
    worker = setup.worker()
    worker.advance(setup.seen(worker, action="none"))
    rows = report_rows(setup.report_path)
    assert sorted(row["path"] for row in rows) == sorted(setup.originals)
    assert all(row["predicted"] and row["new_path"] == "" for row in rows), rows
    assert not placed_files(setup.out)
    for name, data in setup.originals.items():
        assert (setup.inbox / name).read_bytes() == data
    files = [(path, identity_of(path.stat())) for path in setup.inbox.iterdir()]
    assert worker.journal.known(files) == {path for path, _ in files}  # never taken again


def test_an_append_cut_short_is_cut_back_when_the_same_process_retries(setup: Setup) -> None:
    """A full disk stops the append of a batch's rows part way; the daemon retries from the
    journal without a restart (so the report's torn tail was not repaired at open)."""
    worker = setup.worker()
    entries = setup.seen(worker)
    worker.classify(entries)
    worker.place(entries)
    header = setup.report_path.read_text()
    rows = [e.row for e in entries]
    with setup.report_path.open("a") as handle:
        handle.write(rows[0] + rows[1][: len(rows[1]) // 2])  # a row and half of the next
    worker.advance(worker.journal.unfinished())
    assert setup.report_path.read_text() == header + "".join(rows)
    setup.check()


@pytest.mark.parametrize("restart", [False, True], ids=["same process", "after a restart"])
def test_a_report_rotated_away_before_the_rows_were_appended(setup: Setup, restart: bool) -> None:
    """The report is moved away (logrotate) after a batch was placed and before its rows were
    appended: a new report gets them, and the journal the offsets where they now are (which
    tell a later recovery whether they were written)."""
    worker = setup.worker()
    entries = setup.seen(worker)
    done, pending = entries[:2], entries[2:]
    worker.advance(done)
    worker.classify(pending)
    worker.place(pending)
    rotated = setup.report_path.rename(setup.report_path.with_name("labels.csv.1"))
    if restart:
        worker = setup.worker()
        worker.advance(worker.journal.unfinished())
    else:
        worker.report_rows(pending)
    assert [row["path"] for row in report_rows(rotated)] == [e.rel for e in done]
    assert [row["path"] for row in report_rows(setup.report_path)] == [e.rel for e in pending]
    data = setup.report_path.read_bytes()
    with sqlite3.connect(worker.journal.path) as db:
        offsets = dict(db.execute("SELECT rel, report_offset FROM files").fetchall())
    for entry in pending:
        line = data[offsets[entry.rel] :].split(b"\n", 1)[0].decode()
        assert next(csv.reader([line]))[1] == entry.rel, (entry.rel, line)
    assert worker.journal.unfinished() == []


def test_report_tells_which_rows_are_in_it_with_one_read(tmp_path: Path) -> None:
    """`present` compares each (offset, row) with the bytes there: a row cut short by a crash,
    a row past the end and a row whose bytes differ all count as missing; no file, none there."""
    report = AppendReport(tmp_path / "labels.csv", ["a", "b"])
    assert report.present([(0, "x\n")]) == [False]
    report.append("héllo\nworld\ncut")
    rows = [(0, "héllo\n"), (7, "world\n"), (13, "cut-short\n"), (7, "other\n"), (99, "far\n")]
    assert report.present(rows) == [True, True, False, False, False]
    assert report.present([]) == []
