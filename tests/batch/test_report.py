"""Report rows, the streaming writer, reading reports back, tallies and summary files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import classification_report, confusion_matrix

from batch.errors import BatchError
from batch.labels import label_source, read_labels_file
from batch.report import ReportRow, ReportWriter, format_of, read_report, report_labels
from batch.summary import Tally, summary_paths, write_summary

LABELS = ("cat", "dog", "fox")


def _rows() -> list[ReportRow]:
    return [
        ReportRow(
            "a/1.png", "pets", 2, "cat", 0.7, (("cat", 0.7), ("dog", 0.2)), (0.7, 0.2, 0.1), "cat"
        ),
        ReportRow("a/2.png", "pets", 2, error="cannot decode image", true_label="dog"),
        ReportRow("b/3.png", "pets", 2, "dog", 0.5, (("dog", 0.5),), (0.3, 0.5, 0.2), "fox"),
        ReportRow('c, odd "name".png', "pets", 2, "fox", 0.9, (("fox", 0.9),), (0.05, 0.05, 0.9)),
    ]


def _written(path: Path, rows: list[ReportRow]) -> Path:
    """A committed report of `rows`, in the format its suffix names."""
    with ReportWriter(path, LABELS) as writer:
        for row in rows:
            writer.write(row)
        writer.commit()
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_round_trip_and_partial_file_renamed_on_commit(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    with ReportWriter(path, LABELS) as writer:
        for row in _rows():
            writer.write(row)
        assert not path.exists() and writer.partial.exists()
        writer.commit()
    assert path.exists() and not writer.partial.exists()
    assert report_labels(path) == LABELS
    back = list(read_report(path))
    assert back == _rows()
    assert [r.correct for r in back] == [True, None, False, None]


def test_csv_layout_has_every_column(tmp_path: Path) -> None:
    path = _written(tmp_path / "run.csv", _rows())
    with path.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert list(records[0]) == [
        "path", "predicted", "confidence", "top_k_labels", "top_k_scores",
        "prob_cat", "prob_dog", "prob_fox", "model", "version", "true_label", "correct", "error",
    ]  # fmt: skip
    assert records[0]["top_k_labels"] == "cat;dog" and records[0]["correct"] == "true"
    assert records[1]["error"] == "cannot decode image" and records[1]["prob_cat"] == ""
    assert [r["correct"] for r in records] == ["true", "", "false", ""]  # no truth: empty
    assert records[3]["path"] == 'c, odd "name".png'


def test_jsonl_layout_has_every_key(tmp_path: Path) -> None:
    path = _written(tmp_path / "run.jsonl", _rows())
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records[0] == {
        "path": "a/1.png", "predicted": "cat", "confidence": 0.7,
        "top_k": [["cat", 0.7], ["dog", 0.2]],
        "probabilities": {"cat": 0.7, "dog": 0.2, "fox": 0.1},
        "model": "pets", "version": 2, "true_label": "cat", "correct": True, "error": None,
    }  # fmt: skip
    assert [r["correct"] for r in records] == [True, None, False, None]
    assert records[1]["probabilities"] == {} and records[1]["top_k"] == []


def test_a_path_with_a_carriage_return_round_trips(tmp_path: Path) -> None:
    """File names may hold any byte but / and NUL: the CSV quotes them, reading keeps them."""
    row = ReportRow("odd\r\nname.png", "pets", 2, "cat", 0.7, (("cat", 0.7),), (0.7, 0.2, 0.1))
    assert list(read_report(_written(tmp_path / "run.csv", [row]))) == [row]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_written_by_other_tools_may_leave_out_columns(tmp_path: Path, suffix: str) -> None:
    """A hand-made or foreign report with only some columns reads with neutral defaults."""
    path = tmp_path / f"theirs{suffix}"
    if suffix == ".csv":
        path.write_text("predicted,prob_cat,prob_dog,prob_fox\ncat,0.6,0.3,0.1\n", encoding="utf-8")
    else:
        record = {"predicted": "cat", "probabilities": {"cat": 0.6, "dog": 0.3, "fox": 0.1}}
        path.write_text(json.dumps(record) + "\n\n", encoding="utf-8")
    (row,) = read_report(path)
    assert (row.path, row.model, row.version, row.top_k, row.predicted) == ("", "", 0, (), "cat")
    assert row.probabilities == (0.6, 0.3, 0.1) and row.true_label is None and row.error is None


def test_writer_left_without_commit_keeps_only_the_partial(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    with pytest.raises(KeyboardInterrupt), ReportWriter(path, LABELS) as writer:
        writer.write(_rows()[0])
        raise KeyboardInterrupt
    assert not path.exists()
    assert (tmp_path / "run.csv.partial").read_text().count("\n") == 2


def test_tally_and_summary_files_match_sklearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, 200))
    tally = Tally(LABELS)
    for index, (t, p) in enumerate(zip(y_true, y_pred, strict=True)):
        probs = tuple(0.8 if i == p else 0.1 for i in range(3))
        tally.add(ReportRow(f"{index}.png", "m", 1, LABELS[p], 0.8, (), probs, LABELS[t]))
    tally.add(ReportRow("bad.png", "m", 1, error="boom", true_label="cat"))
    tally.add(ReportRow("odd.png", "m", 1, "cat", 0.8, (), (0.8, 0.1, 0.1), "wolf"))
    assert (tally.files, tally.errors, tally.classified) == (202, 1, 201)
    assert tally.unknown_labels == {"wolf": 1}
    metrics = tally.metrics()
    assert metrics is not None
    expected = classification_report(
        [LABELS[i] for i in y_true], [LABELS[i] for i in y_pred], labels=list(LABELS)
    )
    assert metrics.report_text() == expected
    written = write_summary(metrics, tmp_path / "run", {"model": "m"})
    assert written == summary_paths(tmp_path / "run")
    text, data, matrix, picture = written
    assert expected in text.read_text()
    document = json.loads(data.read_text())
    assert document["model"] == "m"
    assert document["accuracy"] == pytest.approx(float(np.mean(y_true == y_pred)))
    assert document["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()
    rows = list(csv.reader(matrix.read_text().splitlines()))
    assert rows[0] == ["true\\predicted", *LABELS]
    assert [[int(c) for c in r[1:]] for r in rows[1:]] == confusion_matrix(y_true, y_pred).tolist()
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.size[0] > 100
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_tally_without_labels_has_no_metrics() -> None:
    tally = Tally(LABELS)
    tally.add(_rows()[3])
    assert tally.metrics() is None


def test_labels_file_with_and_without_header(tmp_path: Path) -> None:
    with_header = tmp_path / "with.csv"
    with_header.write_text("path,label\nx/1.png,cat\n./y.png,dog\n")
    assert read_labels_file(with_header) == {"x/1.png": "cat", "y.png": "dog"}
    bare = tmp_path / "bare.csv"
    bare.write_text("x/1.png,fox\n\n")
    assert read_labels_file(bare) == {"x/1.png": "fox"}
    broken = tmp_path / "broken.csv"
    broken.write_text("path,label\nonly-a-path\n")
    with pytest.raises(BatchError, match="needs a path and a label"):
        read_labels_file(broken)


def test_label_sources(tmp_path: Path) -> None:
    warnings: list[str] = []
    auto = label_source("auto", LABELS, warnings.append)
    assert auto("cat/1.png") == "cat"
    assert auto("deep/dog/2.png") == "dog"
    assert auto("wolf/3.png") is None and auto("top.png") is None
    assert label_source("none", LABELS, warnings.append)("cat/1.png") is None
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("path,label\n1.png,cat\n2.png,wolf\n3.png,bear\n")
    from_file = label_source(str(labels_file), LABELS, warnings.append)
    assert from_file("1.png") == "cat" and from_file("4.png") is None
    assert len(warnings) == 1 and "bear, wolf" in warnings[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("run.jsonl", "jsonl"), ("RUN.JSONL", "jsonl"), ("run.json", "jsonl"), ("run.Json", "jsonl"),
     ("run.ndjson", "jsonl"), ("run.NDJSON", "jsonl"), ("run.csv", "csv"), ("run", "csv"),
     ("run.jsonl.txt", "csv")],
)  # fmt: skip
def test_the_report_format_follows_the_suffix_in_any_case(name: str, expected: str) -> None:
    assert format_of(Path(name)) == expected


def test_rows_are_counted_and_flushed_every_256(tmp_path: Path) -> None:
    """A reader (or a crash) sees the partial file grow in steps of 256 complete rows."""
    row = _rows()[0]
    with ReportWriter(tmp_path / "run.csv", LABELS) as writer:
        for _ in range(256):
            writer.write(row)
        assert writer.rows == 256
        lines = writer.partial.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 + 256  # the header and every row, before any commit
        writer.write(row)
        assert writer.rows == 257
        writer.commit()


def test_labels_of_an_empty_report_and_of_one_with_blank_lines(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert report_labels(empty) == () and list(read_report(empty)) == []
    spaced = tmp_path / "spaced.jsonl"
    record = {"path": "a.png", "probabilities": {"cat": 0.6, "dog": 0.4}}
    spaced.write_text("\n" + json.dumps(record) + "\n", encoding="utf-8")
    assert report_labels(spaced) == ("cat", "dog")
    assert [row.path for row in read_report(spaced)] == ["a.png"]
