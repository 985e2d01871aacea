"""Where a classified file goes and what the journal keeps of it: the stored outcome turns back
into the same report row."""

from __future__ import annotations

from pathlib import Path

from batch.report import ReportRow
from batch.watch.entry import Entry
from batch.watch.outcome import (
    REJECTED,
    UNCERTAIN,
    describe,
    destination_folder,
    outcome_row,
    stored_outcome,
)
from batch.watch.predict import VANISHED_ERROR

CAT = ReportRow("a.png", "m", 1, "cat", 0.7, (("cat", 0.7), ("dog", 0.3)), (0.7, 0.3))


def _entry(outcome: dict[str, object] | None) -> Entry:
    return Entry(1, Path("/inbox/a.png"), "a.png", (1, 2, 3), "classified", "move", None, 0.0,
                 outcome=outcome)  # fmt: skip


def test_the_folder_follows_the_label_the_confidence_and_the_error() -> None:
    assert destination_folder(CAT, min_confidence=0.5) == "cat"
    assert destination_folder(CAT, min_confidence=0.8) == UNCERTAIN
    broken = ReportRow("b.png", "m", 1, error="cannot decode")
    assert destination_folder(broken, min_confidence=0.0) == REJECTED
    gone = ReportRow("c.png", "m", 1, error=VANISHED_ERROR)
    assert destination_folder(gone, min_confidence=0.0) is None


def test_a_stored_outcome_gives_back_the_same_row() -> None:
    stored = stored_outcome(CAT, "cat")
    assert stored["folder"] == "cat"
    # as the journal keeps it: JSON, where tuples come back as lists
    as_json = {k: [list(p) for p in v] if k == "top_k" else v for k, v in stored.items()}
    assert outcome_row(_entry(as_json)) == CAT


def test_a_batch_is_described_by_its_folders() -> None:
    entries = [_entry({"folder": f}) for f in ("cat", "dog", UNCERTAIN, REJECTED, None)]
    assert describe(entries) == "2 filed, 1 uncertain, 1 rejected, 1 vanished"
    assert describe(entries[:2]) == "2 filed, 0 uncertain, 0 rejected"
