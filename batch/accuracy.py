"""Classification metrics from true and predicted labels: accuracy, per-class precision/recall/F1,
the confusion matrix, and scikit-learn's text layout of the classification report.

    metrics = ClassificationMetrics.compute(["cat", "dog"], y_true=[0, 1, 1], y_pred=[0, 1, 0])
    print(metrics.report_text())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


@dataclass(frozen=True)
class ClassificationMetrics:
    labels: tuple[str, ...]
    confusion: np.ndarray  # [true, predicted] counts

    @classmethod
    def compute(
        cls, labels: Sequence[str], y_true: Sequence[int], y_pred: Sequence[int]
    ) -> ClassificationMetrics:
        n = len(labels)
        confusion = np.zeros((n, n), dtype=np.int64)
        np.add.at(confusion, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, np.int64)), 1)
        return cls(tuple(labels), confusion)

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def support(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    @property
    def precision(self) -> np.ndarray:
        return _safe_divide(np.diag(self.confusion).astype(float), self.confusion.sum(axis=0))

    @property
    def recall(self) -> np.ndarray:
        return _safe_divide(np.diag(self.confusion).astype(float), self.support)

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        return _safe_divide(2 * p * r, p + r)

    def averages(self) -> dict[str, dict[str, float]]:
        support = self.support
        weights = support if support.sum() else None  # no labelled file: every score is 0
        result = {}
        for name, w in (("macro avg", None), ("weighted avg", weights)):
            result[name] = {
                "precision": float(np.average(self.precision, weights=w)),
                "recall": float(np.average(self.recall, weights=w)),
                "f1-score": float(np.average(self.f1, weights=w)),
                "support": int(support.sum()),
            }
        return result

    def to_dict(self) -> dict[str, Any]:
        per_class = {
            label: {
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1-score": float(self.f1[i]),
                "support": int(self.support[i]),
            }
            for i, label in enumerate(self.labels)
        }
        return {
            "accuracy": self.accuracy,
            "total": self.total,
            "correct": self.correct,
            "per_class": per_class,
            **self.averages(),
            "labels": list(self.labels),
            "confusion_matrix": self.confusion.tolist(),
        }

    def report_text(self, digits: int = 2) -> str:
        """The classification report in scikit-learn's layout."""
        headers = ("precision", "recall", "f1-score", "support")
        width = max(len("weighted avg"), *(len(label) for label in self.labels), digits)
        lines = [" " * width + " " + "".join(f" {h:>9}" for h in headers), ""]
        row = "{:>{w}s} " + " {:>9.{d}f}" * 3 + " {:>9}"
        for i, label in enumerate(self.labels):
            values = (self.precision[i], self.recall[i], self.f1[i])
            lines.append(row.format(label, *values, int(self.support[i]), w=width, d=digits))
        lines.append("")
        total = int(self.support.sum())
        acc = "{:>{w}s} " + " {:>9}" * 2 + " {:>9.{d}f}" + " {:>9}"
        lines.append(acc.format("accuracy", "", "", self.accuracy, total, w=width, d=digits))
        for name, avg in self.averages().items():
            values = (avg["precision"], avg["recall"], avg["f1-score"])
            lines.append(row.format(name, *values, total, w=width, d=digits))
        return "\n".join(lines) + "\n"

    def confusion_text(self) -> str:
        """The confusion matrix as an aligned table: rows are true labels, columns predicted."""
        corner = "true \\ predicted"
        width = max(len(corner), *(len(label) for label in self.labels))
        cell = 1 + max(len(str(self.confusion.max(initial=0))), *(len(x) for x in self.labels))
        lines = [f"{corner:<{width}}" + "".join(f"{label:>{cell}}" for label in self.labels)]
        for label, counts in zip(self.labels, self.confusion, strict=True):
            lines.append(f"{label:>{width}}" + "".join(f"{int(c):>{cell}}" for c in counts))
        return "\n".join(lines) + "\n"
