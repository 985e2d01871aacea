"""Counting report rows and writing what labelled rows add up to.

`Tally` adds rows one at a time (constant memory: a confusion matrix, not a list of labels);
`write_summary` writes, beside a report, the accuracy + classification report as text, the
same as JSON, the confusion matrix as CSV and as a PNG picture.

    tally = Tally(labels)
    for row in read_report(path): tally.add(row)
    if (metrics := tally.metrics()) is not None:
        write_summary(metrics, path.with_suffix(""))  # run.summary.txt, run.summary.json, ...
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from batch.accuracy import ClassificationMetrics
from batch.fsutil import atomic_write
from batch.report import ReportRow

SUMMARY_SUFFIXES = (".summary.txt", ".summary.json", ".confusion.csv", ".confusion.png")


class Tally:
    """Running counts over report rows: files, classified, errors, and the confusion matrix.

    Rows whose true label is not one of `labels` are left out of the metrics and counted in
    `unknown_labels` (by label).
    """

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self._index = {label: i for i, label in enumerate(self.labels)}
        self.confusion = np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)
        self.files = 0
        self.errors = 0
        self.unknown_labels: Counter[str] = Counter()

    def add(self, row: ReportRow) -> None:
        self.files += 1
        if row.error is not None or row.predicted is None:
            self.errors += 1
            return
        if row.true_label is None:
            return
        truth = self._index.get(row.true_label)
        predicted = self._index.get(row.predicted)
        if truth is None or predicted is None:
            self.unknown_labels[row.true_label if truth is None else row.predicted] += 1
            return
        self.confusion[truth, predicted] += 1

    @property
    def classified(self) -> int:
        return self.files - self.errors

    @property
    def labelled(self) -> int:
        return int(self.confusion.sum())

    def metrics(self) -> ClassificationMetrics | None:
        """The metrics of the labelled rows, or None when no row had a known true label."""
        if not self.labelled:
            return None
        return ClassificationMetrics(self.labels, self.confusion.copy())


def summary_text(metrics: ClassificationMetrics) -> str:
    """Accuracy, the classification report (scikit-learn layout) and the confusion matrix."""
    return (
        f"accuracy: {metrics.accuracy:.4f} ({metrics.correct}/{metrics.total})\n\n"
        f"{metrics.report_text()}\n"
        "confusion matrix (rows: true label, columns: predicted label)\n"
        f"{metrics.confusion_text()}"
    )


def confusion_csv(metrics: ClassificationMetrics) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true\\predicted", *metrics.labels])
    for label, counts in zip(metrics.labels, metrics.confusion, strict=True):
        writer.writerow([label, *(int(c) for c in counts)])
    return buffer.getvalue()


def summary_prefix(report: Path) -> Path:
    """`run.csv` -> `run` (the summary files are `run.summary.txt`, ...)."""
    return report.with_suffix("") if report.suffix else report


def summary_paths(prefix: Path) -> list[Path]:
    return [prefix.with_name(prefix.name + suffix) for suffix in SUMMARY_SUFFIXES]


def write_summary(
    metrics: ClassificationMetrics, prefix: Path, extra: Mapping[str, Any] | None = None
) -> list[Path]:
    """Write `<prefix>.summary.txt`, `.summary.json`, `.confusion.csv`, `.confusion.png`.

    Each file is replaced atomically, so a reader (or a daemon rewriting its running accuracy)
    never sees half a file. `extra` adds keys (run facts) to the JSON. Returns the paths.
    """
    from batch.plots import plot_confusion  # matplotlib: only when a summary is written

    text_path, json_path, csv_path, png_path = summary_paths(prefix)
    document = {**dict(extra or {}), **metrics.to_dict(), "report_text": metrics.report_text()}
    atomic_write(text_path, lambda p: p.write_text(summary_text(metrics), encoding="utf-8"))
    atomic_write(json_path, lambda p: p.write_text(json.dumps(document, indent=2) + "\n"))
    atomic_write(csv_path, lambda p: p.write_text(confusion_csv(metrics), encoding="utf-8"))
    title = f"confusion matrix\naccuracy {metrics.accuracy:.3f} on {metrics.total} images"
    atomic_write(png_path, lambda p: plot_confusion(metrics.labels, metrics.confusion, p, title))
    return [text_path, json_path, csv_path, png_path]


def write_report_summary(
    tally: Tally, report: Path, extra: Mapping[str, Any] | None = None
) -> list[Path]:
    """The summary files beside `report` (`run` and `watch` alike); none without labelled rows."""
    metrics = tally.metrics()
    if metrics is None:
        return []
    return write_summary(metrics, summary_prefix(report), {"report": str(report), **(extra or {})})
