"""What the daemon opens before its loop: a report written for other classes stops it, a labels
file naming classes the model lacks is warned about."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from batch.errors import EXIT_USAGE, BatchError
from batch.watch.report import AppendReport
from batch.watch.settings import WatchSettings
from batch.watch.startup import open_work
from tests.images import GRAY_CLASSES, RGB_CLASSES


def _settings(root: Path, repository: Path, labels: Path | None = None) -> WatchSettings:
    (root / "inbox").mkdir()
    return WatchSettings(
        inbox=root / "inbox", out=root / "out", model="gray", repository=repository, labels=labels
    )


def test_a_report_written_for_other_classes_stops_the_start(
    model_repository: Path, tmp_path: Path
) -> None:
    report = tmp_path / "out" / "labels.csv"
    AppendReport(report, RGB_CLASSES).open()  # started by a daemon of the `rgb` model
    header = report.read_text()
    settings = _settings(tmp_path, model_repository)
    with pytest.raises(BatchError) as raised, ExitStack() as stack:
        open_work(settings, stack)
    assert raised.value.code == EXIT_USAGE
    assert f"written for classes {', '.join(RGB_CLASSES)}" in str(raised.value)
    assert "choose another --report" in str(raised.value)
    assert report.read_text() == header  # left as it was


def test_a_labels_file_naming_classes_the_model_lacks_is_warned_about(
    model_repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = tmp_path / "truth.csv"
    labels.write_text(f"path,label\na.png,{GRAY_CLASSES[0]}\nb.png,zebra\nc.png,cat\n")
    settings = _settings(tmp_path, model_repository, labels=labels)
    with ExitStack() as stack:
        _, inbox = open_work(settings, stack)
        assert inbox.true_label(inbox.root / "b.png") == "zebra"  # kept, out of the metrics
    assert f"{labels} names classes the model does not have: cat, zebra" in caplog.text
