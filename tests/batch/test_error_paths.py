"""Error and edge paths of clfbatch's pure modules and CLI that the workflow tests do not reach:
labels files, report files read and written, and start-up refusals of `run` and `models`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch.errors import BatchError
from batch.labels import label_source, read_labels_file
from batch.report import ReportRow, ReportWriter, read_report, report_labels
from tests.batch.conftest import run_cli

LABELS = ("cat", "dog")


def test_labels_file_edge_cases(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("\n \n")
    assert read_labels_file(empty) == {}
    with pytest.raises(BatchError, match="cannot read labels file"):
        read_labels_file(tmp_path)  # a folder
    known = tmp_path / "known.csv"
    known.write_text("a.png,cat\nb.png,dog\n")
    warnings: list[str] = []
    truth = label_source(str(known), LABELS, warnings.append)
    assert (truth("a.png"), truth("b.png"), truth("c.png")) == ("cat", "dog", None)
    assert warnings == []  # every class is the model's: nothing to warn about


def test_jsonl_reports_with_blank_lines_and_only_errors(tmp_path: Path) -> None:
    errors_only = tmp_path / "errors.jsonl"
    with ReportWriter(errors_only, LABELS) as writer:
        writer.write(ReportRow("a.png", "m", 1, error="cannot decode image"))
        writer.commit()
    assert report_labels(errors_only) == ()  # no row says which classes the model has
    spaced = tmp_path / "spaced.jsonl"
    row = {"path": "b.png", "predicted": "dog", "confidence": 0.75, "top_k": [["dog", 0.75]],
           "probabilities": {"cat": 0.25, "dog": 0.75}, "model": "m", "version": 2,
           "true_label": "cat", "correct": False, "error": None}  # fmt: skip
    spaced.write_text("\n" + json.dumps(row) + "\n\n")
    assert report_labels(spaced) == LABELS
    (read,) = read_report(spaced)
    assert (read.path, read.predicted, read.probabilities, read.true_label) == (
        "b.png", "dog", (0.25, 0.75), "cat"
    )  # fmt: skip


def test_report_writer_flushes_long_reports_as_it_goes(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    with ReportWriter(path, LABELS) as writer:
        for index in range(256):
            writer.write(ReportRow(f"{index}.png", "m", 1, "cat", 1.0, (("cat", 1.0),), (1.0, 0.0)))
        # Before commit or close: the first 256 rows are on disk in the partial file already.
        assert writer.partial.read_text().count("\n") == 256
        writer.commit()
    assert len(list(read_report(path))) == 256


def test_run_and_models_refuse_to_start(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    missing_labels = run_cli(
        "run", tmp_path / "images", "--model", "gray", "--labels", tmp_path / "nope.csv",
        cwd=tmp_path,
    )  # fmt: skip
    assert missing_labels.returncode == 2, missing_labels.stderr
    assert "nope.csv does not exist (use auto, none or a CSV file)" in missing_labels.stderr
    no_repository = run_cli("models", "--repository", tmp_path / "nowhere", cwd=tmp_path)
    assert no_repository.returncode == 2
    assert "repository" in no_repository.stderr and "nowhere does not exist" in no_repository.stderr
