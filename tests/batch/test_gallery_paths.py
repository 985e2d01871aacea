"""Gallery and server-access edge paths with expectations written out: error rows, reports
with top-k scores only, report names that do not lead to their folder, many missing files,
models with more classes than bars; half a key pair and unreadable certificate files."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch.backends import ServerAccess
from batch.errors import BatchError
from batch.gallery import (
    MAX_BARS,
    GalleryItem,
    images_root,
    missing_line,
    probabilities,
    select,
    shown_classes,
)
from batch.report import ReportRow


def _row(name: str, predicted: str | None, confidence: float | None, true: str) -> ReportRow:
    return ReportRow(name, "m", 1, predicted, confidence, true_label=true)


def test_error_rows_are_never_selected() -> None:
    rows = [
        _row("broken.png", None, None, "cat"),
        _row("right.png", "cat", 0.6, "cat"),
        _row("wrong.png", "dog", 0.9, "cat"),
    ]
    assert [r.path for r in select(rows, 5)] == ["wrong.png", "right.png"]


def test_probabilities_from_top_k_when_the_report_has_no_columns() -> None:
    row = ReportRow("a.png", "m", 1, "dog", 0.7, (("dog", 0.7), ("fox", 0.2)))
    assert probabilities(row, ("cat", "dog", "fox")) == (0.0, 0.7, 0.2)


def test_images_root_falls_back_to_the_reports_folder(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    assert images_root(tmp_path / "pics-rgb.csv", "rgb") == tmp_path / "pics"
    assert images_root(tmp_path / "gone-rgb.csv", "rgb") == tmp_path  # no such folder
    assert images_root(tmp_path / "pics.csv", "rgb") == tmp_path  # not <folder>-<model>


def test_missing_line_names_ten_then_counts(tmp_path: Path) -> None:
    missing = [f"{i}.png" for i in range(13)]
    line = missing_line(missing, 20, tmp_path)
    head = f"warning: gallery: 13 of its 20 images missing or unreadable under {tmp_path}: "
    assert line.startswith(head)
    assert "0.png, 1.png" in line and "9.png and 3 more (drawn" in line and "10.png" not in line


def test_many_classes_show_the_top_ones_and_the_true_class() -> None:
    labels = tuple(f"c{i:02d}" for i in range(MAX_BARS + 3))
    probs = tuple(float(i) / 100 for i in range(len(labels)))  # c14 most probable, c00 least
    top = [len(labels) - 1 - i for i in range(MAX_BARS - 2)]
    wrong = GalleryItem(_row("a.png", "c14", 0.14, "c00"), probs, None)
    assert shown_classes(labels, wrong) == [*top, 0]  # the true class is added
    right = GalleryItem(_row("b.png", "c14", 0.14, "c14"), probs, None)
    assert shown_classes(labels, right) == top  # already among them


def test_server_access_is_checked_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="--tls-cert and --tls-key go together"):
        ServerAccess(tls_cert=tmp_path / "c.pem").check()
    with pytest.raises(BatchError, match=r"--tls-ca .*ca\.pem is not a readable file"):
        ServerAccess(tls_ca=tmp_path / "ca.pem").check()
    ServerAccess().check()  # nothing to check: plaintext
