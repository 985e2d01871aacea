"""`clfbatch report` as a user runs it (a subprocess): `--quiet`, and each error exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.batch.conftest import run_cli
from tests.batch.test_gallery import ROWS, write_images, write_report


def test_quiet_prints_nothing_and_writes_the_same_files(tmp_path: Path) -> None:
    report = tmp_path / "run.csv"
    write_report(report, ROWS)
    loud = run_cli("report", report, "--out-prefix", tmp_path / "loud", cwd=tmp_path)
    quiet = run_cli("report", report, "--out-prefix", tmp_path / "quiet", "--quiet", cwd=tmp_path)
    short = run_cli("report", report, "--out-prefix", tmp_path / "short", "-q", cwd=tmp_path)
    for result in (loud, quiet, short):
        assert result.returncode == 0, result.stderr
    assert "accuracy: 0.6667" in loud.stdout and "summary: " in loud.stdout  # what -q hides
    assert "6 rows, 0 errors, 6 labelled" in loud.stdout
    assert quiet.stdout == "" and short.stdout == ""
    for prefix in ("quiet", "short"):
        written = sorted(p.name.removeprefix(prefix) for p in tmp_path.glob(f"{prefix}.*"))
        expected = sorted(p.name.removeprefix("loud") for p in tmp_path.glob("loud.*"))
        assert written == expected and ".summary.json" in written
        for suffix in written:
            assert (tmp_path / f"{prefix}{suffix}").read_bytes() == (
                tmp_path / f"loud{suffix}"
            ).read_bytes(), suffix


def test_quiet_gallery_prints_nothing(tmp_path: Path) -> None:
    write_images(tmp_path / "pics", [name for name, _, _ in ROWS])
    report = tmp_path / "run.csv"
    write_report(report, ROWS)
    args = ("report", report, "--gallery", "--images", tmp_path / "pics", "--quiet")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (tmp_path / "run.gallery.html").stat().st_size > 0
    assert (tmp_path / "run.gallery.png").stat().st_size > 0


def test_error_exits_name_the_problem(tmp_path: Path) -> None:
    missing = run_cli("report", tmp_path / "nope.csv", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.csv does not exist" in missing.stderr
    assert missing.stdout == ""

    plain = tmp_path / "plain.csv"
    plain.write_text("path,label\na.png,cat\n")
    not_report = run_cli("report", plain, cwd=tmp_path)
    assert not_report.returncode == 2, not_report.stderr
    assert "no probability columns: not a clfbatch report" in not_report.stderr

    broken = tmp_path / "broken.jsonl"
    good = {"path": "a.png", "predicted": "cat", "confidence": 0.9, "top_k": [["cat", 0.9]],
            "probabilities": {"cat": 0.9, "dog": 0.1}, "model": "m", "version": 1,
            "true_label": "cat", "correct": True, "error": None}  # fmt: skip
    broken.write_text(json.dumps(good) + "\n" + "{not json\n")
    unreadable = run_cli("report", broken, cwd=tmp_path)
    assert unreadable.returncode == 2, unreadable.stderr
    assert "is not a readable clfbatch report" in unreadable.stderr

    unlabelled = tmp_path / "unlabelled.csv"
    write_report(unlabelled, [(name, probs, "") for name, probs, _ in ROWS])
    nothing = run_cli("report", unlabelled, cwd=tmp_path)
    assert nothing.returncode == 2, nothing.stderr
    assert "no classified row has a true label; nothing to compute" in nothing.stderr
    assert not (tmp_path / "unlabelled.summary.json").exists()


def test_rows_with_labels_the_model_lacks_are_left_out_with_a_warning(tmp_path: Path) -> None:
    report = tmp_path / "run.csv"
    write_report(report, [*ROWS, ("x/cat.png", [0.2, 0.3, 0.5], "cat")])
    result = run_cli("report", report, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "labels the model does not have were left out: cat" in result.stderr
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["total"] == 6 and summary["accuracy"] == pytest.approx(4 / 6)
    assert "accuracy: 0.6667 (4/6)" in result.stdout
