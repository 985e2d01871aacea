"""What a classification means for one watched file: the folder it goes to, what the journal
keeps of it, and the report row and log line made from that.

    folder = destination_folder(row, min_confidence=0.6)   # "cat", "_uncertain", "_rejected"
    entry.outcome = stored_outcome(row, folder)
    row = outcome_row(entry)                               # back, for the report and the tally
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from batch.report import ReportRow
from batch.watch.entry import Entry
from batch.watch.predict import VANISHED_ERROR

UNCERTAIN, REJECTED = "_uncertain", "_rejected"


def outcome_row(entry: Entry) -> ReportRow:
    """The report row an entry's stored outcome stands for."""
    data = dict(entry.outcome or {})
    data.pop("folder", None)
    data["top_k"] = tuple((str(label), float(score)) for label, score in data.get("top_k", ()))
    data["probabilities"] = tuple(data.get("probabilities", ()))
    return ReportRow(**data)


def describe(entries: Sequence[Entry]) -> str:
    """`"60 filed, 3 uncertain, 1 rejected"` for a batch's log line."""
    folders = Counter((e.outcome or {}).get("folder") for e in entries)
    uncertain, rejected = folders.pop(UNCERTAIN, 0), folders.pop(REJECTED, 0)
    vanished = folders.pop(None, 0)
    text = f"{sum(folders.values())} filed, {uncertain} uncertain, {rejected} rejected"
    return text + (f", {vanished} vanished" if vanished else "")


def stored_outcome(row: ReportRow, folder: str | None) -> dict[str, Any]:
    """What the journal keeps of a classification: the row's fields and the folder it goes to."""
    fields = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}  # asdict is slow
    return {**fields, "folder": folder}


def destination_folder(row: ReportRow, min_confidence: float) -> str | None:
    """Where a classified file goes under OUT: its label, `_uncertain` below `min_confidence`,
    `_rejected` when it could not be classified; None when it vanished (nothing to place)."""
    if row.error == VANISHED_ERROR:
        return None
    if row.error is not None or row.predicted is None:
        return REJECTED
    if row.confidence is not None and row.confidence < min_confidence:
        return UNCERTAIN
    return row.predicted
