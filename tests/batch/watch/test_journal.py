"""The journal on its own: each file's walk through the states, what counts as already known,
and what survives closing and reopening (as after a crash)."""

from __future__ import annotations

from pathlib import Path

from batch.watch.entry import CLASSIFIED, PLACED, REPORTED, SEEN, SUPERSEDED, NewFile
from batch.watch.journal import Journal


def _new(name: str, action: str = "move", identity: tuple[int, int, int] = (1, 2, 3)) -> NewFile:
    return NewFile(Path("/inbox") / name, name, identity, action, true_label="cat")


def test_an_entry_walks_the_states_and_reopening_finds_what_was_left(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    a, b, c = journal.add_seen([_new("a.png"), _new("b.png"), _new("c.png")])
    assert [e.id for e in (a, b, c)] == [1, 2, 3] and a.state == SEEN
    a.outcome, a.dest = {"predicted": "cat"}, Path("/out/cat/a.png")
    b.outcome, b.dest = {"error": "broken"}, Path("/out/_rejected/b.png")
    journal.mark_classified([a, b])
    assert journal.reserved_destinations() == {a.dest, b.dest}
    a.row, a.report_offset = "a.png,cat\n", 120
    journal.mark_placed([a])
    journal.mark([b], REPORTED)
    journal.close()

    again = Journal(path)  # as after a restart
    left = again.unfinished()
    assert [(e.rel, e.state) for e in left] == [("a.png", PLACED), ("c.png", SEEN)]
    first = left[0]
    assert first.outcome == {"predicted": "cat"} and first.dest == Path("/out/cat/a.png")
    assert (first.row, first.report_offset, first.true_label) == ("a.png,cat\n", 120, "cat")
    assert first.identity == (1, 2, 3) and first.source == Path("/inbox/a.png")
    assert again.reserved_destinations() == {Path("/out/cat/a.png")}  # b is final: released
    again.mark([first], REPORTED)
    again.mark([left[1]], SUPERSEDED)
    assert again.unfinished() == [] and again.reserved_destinations() == set()
    new = again.add_seen([_new("d.png")])
    assert new[0].id == 4  # ids keep growing across restarts
    again.close()


def test_known_is_the_same_file_version_still_ours(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    moved, copied, changed, dropped, open_ = journal.add_seen(
        [
            _new("moved.png"),
            _new("copied.png", action="copy"),
            _new("changed.png"),
            _new("dropped.png"),
            _new("open.png"),
        ]
    )
    journal.mark([moved, copied, changed], REPORTED)
    journal.mark([dropped], SUPERSEDED)
    asked = [
        (Path("/inbox/moved.png"), (1, 2, 3)),  # moved away and reported: back means new
        (Path("/inbox/copied.png"), (1, 2, 3)),  # the copy left in the inbox: known
        (Path("/inbox/changed.png"), (9, 2, 3)),  # same name, another version: new
        (Path("/inbox/dropped.png"), (1, 2, 3)),  # superseded: taken again
        (Path("/inbox/open.png"), (1, 2, 3)),  # still being worked on: known
        (Path("/inbox/never.png"), (1, 2, 3)),
    ]
    assert journal.known(asked) == {Path("/inbox/copied.png"), Path("/inbox/open.png")}
    assert open_.state == SEEN and changed.state == REPORTED
    journal.set_dest(open_, Path("/out/x.png"))
    journal.set_outcome(open_, {"error": "gone"})
    (entry,) = journal.unfinished()
    assert entry.dest == Path("/out/x.png") and entry.outcome == {"error": "gone"}
    assert entry.state != CLASSIFIED
    journal.close()


def _pragma(journal: Journal, name: str) -> str | int:
    (value,) = journal._db.execute(f"PRAGMA {name}").fetchone()
    return value


def test_commits_that_announce_an_action_are_fsynced_the_others_not(tmp_path: Path) -> None:
    """WAL mode; synchronous FULL (2) for classified and placed (a move or an append follows),
    NORMAL (1) for seen and the final states (nothing on disk depends on them)."""
    journal = Journal(tmp_path / "journal.sqlite")
    assert _pragma(journal, "journal_mode") == "wal" and _pragma(journal, "synchronous") == 2
    (entry,) = journal.add_seen([_new("a.png")])
    assert _pragma(journal, "synchronous") == 1
    entry.outcome, entry.dest = {"predicted": "cat"}, Path("/out/cat/a.png")
    journal.mark_classified([entry])
    assert _pragma(journal, "synchronous") == 2
    journal.mark([entry], REPORTED)
    assert _pragma(journal, "synchronous") == 1
    entry.row, entry.report_offset = "a.png,cat\n", 0
    journal.mark_placed([entry])
    assert _pragma(journal, "synchronous") == 2
    journal.set_dest(entry, None)
    assert _pragma(journal, "synchronous") == 2
    journal.close()


def test_ids_continue_across_batches_and_restarts_and_every_field_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    first = journal.add_seen([_new("a.png"), _new("b.png")])
    second = journal.add_seen([_new("c.png", action="link", identity=(7, 8, 9))])
    journal.close()
    journal = Journal(path)
    (third,) = journal.add_seen([_new("d.png")])
    assert [e.id for e in (*first, *second, third)] == [1, 2, 3, 4]
    entries = {e.rel: e for e in journal.unfinished()}
    c = entries["c.png"]
    assert (c.id, c.source, c.identity, c.action, c.state) == (
        3, Path("/inbox/c.png"), (7, 8, 9), "link", SEEN,
    )  # fmt: skip
    assert c.true_label == "cat" and c.seen_at == second[0].seen_at > 0
    assert (c.outcome, c.dest, c.row, c.report_offset) == (None, None, None, None)
    journal.close()


def test_final_states_drop_what_only_recovery_needed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    (entry,) = journal.add_seen([_new("a.png")])
    entry.outcome, entry.dest = {"predicted": "cat"}, Path("/out/cat/a.png")
    journal.mark_classified([entry])
    entry.row, entry.report_offset = "a.png,cat\n", 40
    journal.mark_placed([entry])
    journal.mark([entry], REPORTED)
    row = journal._db.execute(
        "SELECT state, outcome, row, dest, report_offset FROM files"
    ).fetchone()
    assert row == (REPORTED, None, None, "/out/cat/a.png", 40) and entry.state == REPORTED
    journal.close()


def test_known_answers_for_more_files_than_one_query_takes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    names = [f"{i:04d}.png" for i in range(1203)]  # three chunks of 500
    journal.add_seen([_new(name) for name in names])
    asked = [(Path("/inbox") / name, (1, 2, 3)) for name in names]
    asked.append((Path("/inbox/other.png"), (1, 2, 3)))
    assert journal.known(asked) == {Path("/inbox") / name for name in names}
    journal.close()


def test_entries_in_memory_follow_the_journal_and_no_destination_stays_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "not" / "yet" / "journal.sqlite"  # folders made on open
    journal = Journal(path)
    assert journal.path == path and path.is_file()
    placed, rejected = journal.add_seen([_new("a.png"), _new("b.png", action="none")])
    placed.outcome, placed.dest = {"predicted": "cat"}, Path("/out/cat/a.png")
    rejected.outcome, rejected.dest = {"error": "broken"}, None  # action none: never moved
    journal.mark_classified([placed, rejected])
    assert placed.state == rejected.state == CLASSIFIED
    journal.set_dest(placed, Path("/out/cat/a-1.png"))  # a collision: another name
    assert placed.dest == Path("/out/cat/a-1.png")
    assert journal.reserved_destinations() == {Path("/out/cat/a-1.png")}
    journal.set_dest(placed, None)
    journal.set_outcome(placed, {"error": "gone"})
    assert placed.dest is None and placed.outcome == {"error": "gone"}
    placed.row, placed.report_offset = "a.png,,gone\n", 0
    journal.mark_placed([placed])
    assert placed.state == PLACED
    journal.close()
    again = Journal(path)
    reopened = {e.rel: e for e in again.unfinished()}
    again.close()
    assert reopened["a.png"].dest is None and reopened["a.png"].outcome == {"error": "gone"}
    assert reopened["b.png"].dest is None and reopened["b.png"].state == CLASSIFIED
