"""batch.accuracy against scikit-learn (an independent implementation) and hand-written tables."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import classification_report, precision_recall_fscore_support

from batch.accuracy import ClassificationMetrics
from tests.conftest import replayable_seed

LABELS = ("cat", "dog", "horse", "a_much_longer_label")


@pytest.mark.parametrize("digits", [2, 4])
def test_random_predictions_agree_with_scikit_learn(digits: int) -> None:
    seed = replayable_seed()
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, 300)  # the last class never occurs: zero support
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 4, 300))
    metrics = ClassificationMetrics.compute(LABELS, y_true.tolist(), y_pred.tolist())
    labels = list(range(len(LABELS)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    message = f"CLF_TEST_SEED={seed}"
    np.testing.assert_allclose(metrics.precision, p, err_msg=message)
    np.testing.assert_allclose(metrics.recall, r, err_msg=message)
    np.testing.assert_allclose(metrics.f1, f, err_msg=message)
    np.testing.assert_array_equal(metrics.support, s, err_msg=message)
    assert metrics.total == 300 and metrics.correct == int((y_true == y_pred).sum()), message
    assert metrics.accuracy == pytest.approx((y_true == y_pred).mean()), message
    expected = classification_report(
        y_true, y_pred, labels=labels, target_names=list(LABELS), digits=digits,
        zero_division=0, output_dict=True,
    )  # fmt: skip
    for name in ("macro avg", "weighted avg"):
        for key in ("precision", "recall", "f1-score", "support"):
            assert metrics.averages()[name][key] == pytest.approx(expected[name][key]), message
    text = classification_report(
        y_true, y_pred, labels=labels, target_names=list(LABELS), digits=digits, zero_division=0
    )
    assert metrics.report_text(digits) == text, message


def test_a_small_case_by_hand() -> None:
    # true:      cat cat cat dog dog horse
    # predicted: cat dog cat dog dog cat
    metrics = ClassificationMetrics.compute(LABELS[:3], [0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 1, 0])
    assert metrics.confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    result = metrics.to_dict()
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert (result["total"], result["correct"]) == (6, 4)
    assert result["labels"] == ["cat", "dog", "horse"]
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    cat, dog, horse = (result["per_class"][name] for name in ("cat", "dog", "horse"))
    assert cat == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1-score": 2 / 3, "support": 3}
    )
    assert dog == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1-score": 0.8, "support": 2})
    assert horse == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 1}
    assert result["macro avg"] == pytest.approx(
        {"precision": 4 / 9, "recall": 5 / 9, "f1-score": (2 / 3 + 0.8) / 3, "support": 6}
    )
    assert result["weighted avg"] == pytest.approx(
        {"precision": (2 + 4 / 3) / 6, "recall": 4 / 6, "f1-score": (2 + 1.6) / 6, "support": 6}
    )
    assert metrics.confusion_text() == (
        "true \\ predicted   cat   dog horse\n"
        "             cat     2     1     0\n"
        "             dog     0     2     0\n"
        "           horse     1     0     0\n"
    )


def test_wide_counts_widen_the_confusion_cells() -> None:
    metrics = ClassificationMetrics.compute(["a", "b"], [0] * 123456 + [1], [0] * 123456 + [1])
    assert metrics.confusion_text() == (
        "true \\ predicted      a      b\n"
        "               a 123456      0\n"
        "               b      0      1\n"
    )


def test_no_labelled_file_gives_zeros_not_an_error() -> None:
    metrics = ClassificationMetrics.compute(["a", "b"], [], [])
    assert (metrics.total, metrics.correct, metrics.accuracy) == (0, 0, 0.0)
    zeros = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
    assert metrics.averages() == {"macro avg": zeros, "weighted avg": zeros}
    assert metrics.to_dict()["per_class"]["a"] == zeros


def test_more_digits_than_any_row_name_widen_the_name_column() -> None:
    y_true, y_pred = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    metrics = ClassificationMetrics.compute(["a", "b"], y_true, y_pred)
    expected = classification_report(y_true, y_pred, target_names=["a", "b"], digits=13)
    assert metrics.report_text(13) == expected  # 13 > len("weighted avg")
