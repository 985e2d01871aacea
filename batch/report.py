"""Report rows and their files: one row per image, streamed to CSV or JSONL.

Rows are written to `<report>.partial` as they come and the file is renamed to its real name
only by `commit()`: an interrupted run never leaves a report that looks complete.

    with ReportWriter(Path("run.csv"), labels) as writer:
        writer.write(row)
        writer.commit()
    rows = list(read_report(Path("run.csv")))

CSV columns: path, predicted, confidence, top_k_labels, top_k_scores ("a;b", "0.9;0.1"),
`prob_<class>` for every class in model order, model, version, true_label, correct, error.
JSONL lines hold the same keys, with `top_k` as [[label, score], ...] and `probabilities` as
{class: p}.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

ReportFormat = Literal["csv", "jsonl"]
FORMATS: tuple[str, ...] = ("csv", "jsonl")
PROB_PREFIX = "prob_"
PARTIAL_SUFFIX = ".partial"
_FLUSH_EVERY = 256


@dataclass(frozen=True)
class ReportRow:
    """One classified (or failed) file. `error` set means no prediction."""

    path: str
    model: str
    version: int
    predicted: str | None = None
    confidence: float | None = None
    top_k: tuple[tuple[str, float], ...] = ()
    probabilities: tuple[float, ...] = ()  # in the model's class order
    true_label: str | None = None
    error: str | None = None

    @property
    def correct(self) -> bool | None:
        if self.true_label is None or self.predicted is None:
            return None
        return self.predicted == self.true_label


def format_of(path: Path) -> ReportFormat:
    """The report format a file name implies (`.jsonl` / `.json` -> jsonl, else csv)."""
    return "jsonl" if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv"


def csv_header(labels: Sequence[str]) -> list[str]:
    head = ["path", "predicted", "confidence", "top_k_labels", "top_k_scores"]
    tail = ["model", "version", "true_label", "correct", "error"]
    return [*head, *(PROB_PREFIX + label for label in labels), *tail]


def _score(value: float) -> str:
    return f"{value:.6f}"


def to_csv_record(row: ReportRow, n_labels: int) -> list[str]:
    correct = row.correct
    probs = [_score(p) for p in row.probabilities] or [""] * n_labels
    return [
        row.path,
        row.predicted or "",
        _score(row.confidence) if row.confidence is not None else "",
        ";".join(label for label, _ in row.top_k),
        ";".join(_score(score) for _, score in row.top_k),
        *probs,
        row.model,
        str(row.version),
        row.true_label or "",
        "" if correct is None else str(correct).lower(),
        row.error or "",
    ]


def to_json_record(row: ReportRow, labels: Sequence[str]) -> dict[str, Any]:
    return {
        "path": row.path,
        "predicted": row.predicted,
        "confidence": row.confidence,
        "top_k": [[label, score] for label, score in row.top_k],
        "probabilities": dict(zip(labels, row.probabilities, strict=True))
        if row.probabilities
        else {},
        "model": row.model,
        "version": row.version,
        "true_label": row.true_label,
        "correct": row.correct,
        "error": row.error,
    }


class ReportWriter:
    """Streams rows into `<path>.partial`; `commit()` renames it to `path`.

    Leaving the `with` block without `commit()` (an error, Ctrl-C) keeps only the partial file.
    """

    def __init__(self, path: Path, labels: Sequence[str], fmt: ReportFormat | None = None) -> None:
        self.path = path
        self.partial = path.with_name(path.name + PARTIAL_SUFFIX)
        self.labels = tuple(labels)
        self.format: ReportFormat = fmt or format_of(path)
        self.rows = 0
        self._file: IO[str] = self.partial.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file) if self.format == "csv" else None
        if self._csv is not None:
            self._csv.writerow(csv_header(self.labels))

    def write(self, row: ReportRow) -> None:
        if self._csv is not None:
            self._csv.writerow(to_csv_record(row, len(self.labels)))
        else:
            self._file.write(json.dumps(to_json_record(row, self.labels)) + "\n")
        self.rows += 1
        if self.rows % _FLUSH_EVERY == 0:
            self._file.flush()

    def commit(self) -> Path:
        """Flush, sync and rename the partial file to the report's name."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


def _from_csv(record: dict[str, str], labels: Sequence[str]) -> ReportRow:
    names = [n for n in (record.get("top_k_labels") or "").split(";") if n]
    scores = [float(s) for s in (record.get("top_k_scores") or "").split(";") if s]
    probs = tuple(
        p
        for p in (_float(record.get(PROB_PREFIX + label) or "") for label in labels)
        if p is not None
    )
    return ReportRow(
        path=record.get("path") or "",
        model=record.get("model") or "",
        version=int(record.get("version") or 0),
        predicted=(record.get("predicted") or "").strip() or None,
        confidence=_float(record.get("confidence") or ""),
        top_k=tuple(zip(names, scores, strict=False)),
        probabilities=probs,
        true_label=(record.get("true_label") or "").strip() or None,
        error=(record.get("error") or "").strip() or None,
    )


def _from_json(record: dict[str, Any], labels: Sequence[str]) -> ReportRow:
    probs = record.get("probabilities") or {}
    return ReportRow(
        path=str(record.get("path", "")),
        model=str(record.get("model", "")),
        version=int(record.get("version") or 0),
        predicted=record.get("predicted") or None,
        confidence=record.get("confidence"),
        top_k=tuple((str(n), float(s)) for n, s in record.get("top_k") or []),
        probabilities=tuple(float(probs[label]) for label in labels if label in probs),
        true_label=record.get("true_label") or None,
        error=record.get("error") or None,
    )


def report_labels(path: Path) -> tuple[str, ...]:
    """The class names a report was written with (its probability columns, in model order)."""
    if format_of(path) == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        return tuple(h[len(PROB_PREFIX) :] for h in header if h.startswith(PROB_PREFIX))
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            probs = json.loads(line).get("probabilities") if line.strip() else None
            if probs:
                return tuple(probs.keys())
    return ()


def read_report(path: Path) -> Iterator[ReportRow]:
    """Every row of a CSV or JSONL report, in file order (streamed)."""
    labels = report_labels(path)
    with path.open(newline="", encoding="utf-8") as handle:
        if format_of(path) == "csv":
            for record in csv.DictReader(handle):
                yield _from_csv(record, labels)
        else:
            for line in handle:
                if line.strip():
                    yield _from_json(json.loads(line), labels)
