"""`clfbatch run / models / report` as real subprocesses on synthetic folders."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from serve.client import Client
from serve.loader import load
from serve.preprocess import preprocess_bytes
from serve.repository import resolve
from tests.batch.conftest import cli_env, run_cli
from tests.images import RGB_CLASSES, encode, gray_pixels
from tests.serve.conftest import BrokenClassifier, Recording, ServerThread, make_settings

pytestmark = pytest.mark.slow  # each run starts Python + TensorFlow (~5 s)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_labelled_folder_report_and_metrics_equal_independent_values(
    model_repository: Path, rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, truth = rgb_folder
    (folder / "green" / "broken.png").write_bytes(
        encode(gray_pixels("dark", np.random.default_rng(1)))[:60]
    )
    (folder / "README.txt").write_text("not an image")
    result = run_cli(
        "run",
        folder,
        "--model",
        "rgb",
        "--repository",
        model_repository,
        "--top-k",
        "2",
        "--fail-on-error",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr  # one corrupt file + --fail-on-error
    report = tmp_path / "images-rgb.csv"
    rows = _rows(report)
    # Stable order: files of each folder sorted, folders in name order; one row per image.
    assert [r["path"] for r in rows] == sorted([*truth, "green/broken.png"])
    broken = next(r for r in rows if r["path"] == "green/broken.png")
    assert broken["error"] and not broken["predicted"] and broken["true_label"] == "green"
    good = [r for r in rows if not r["error"]]
    # Predictions: the model called directly on the shared preprocessing, in this process.
    version = resolve(model_repository, "rgb")
    pre = version.manifest.preprocessing
    inputs = np.stack([preprocess_bytes((folder / r["path"]).read_bytes(), pre) for r in good])
    probs = load(version).predict(inputs)
    for row, p in zip(good, probs, strict=True):
        assert row["predicted"] == RGB_CLASSES[int(p.argmax())]
        assert [float(row[f"prob_{c}"]) for c in RGB_CLASSES] == pytest.approx(p, abs=2e-6)
        assert row["top_k_labels"].split(";")[0] == row["predicted"]
        assert (row["model"], row["version"], row["true_label"]) == ("rgb", "1", truth[row["path"]])
        assert row["correct"] == str(row["predicted"] == row["true_label"]).lower()
    y_true = [truth[r["path"]] for r in good]
    y_pred = [r["predicted"] for r in good]
    assert accuracy_score(y_true, y_pred) < 1.0  # the two mislabelled files
    expected_report = classification_report(y_true, y_pred, labels=list(RGB_CLASSES))
    expected_matrix = confusion_matrix(y_true, y_pred, labels=list(RGB_CLASSES)).tolist()
    assert expected_report in result.stdout
    assert f"accuracy: {accuracy_score(y_true, y_pred):.4f}" in result.stdout
    assert "1 errors" in result.stdout and "1 non-image files skipped" in result.stdout
    summary = json.loads((tmp_path / "images-rgb.summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert summary["confusion_matrix"] == expected_matrix
    assert summary["report_text"] == expected_report
    for label in RGB_CLASSES:
        assert summary["per_class"][label]["support"] == y_true.count(label)
    matrix = list(csv.reader((tmp_path / "images-rgb.confusion.csv").read_text().splitlines()))
    assert [[int(c) for c in r[1:]] for r in matrix[1:]] == expected_matrix
    assert expected_report in (tmp_path / "images-rgb.summary.txt").read_text()
    with Image.open(tmp_path / "images-rgb.confusion.png") as picture:
        assert picture.format == "PNG"

    # A person corrects two labels in the report; `clfbatch report` recomputes everything.
    fixed = tmp_path / "fixed.csv"
    corrected = {"blue/zz_red_looks.png": "red", "red/zz_green_looks.png": "green"}
    with report.open(newline="") as src, fixed.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            writer.writerow({**row, "true_label": corrected.get(row["path"], row["true_label"])})
    again = run_cli("report", fixed, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    y_fixed = [corrected.get(r["path"], truth[r["path"]]) for r in good]
    assert classification_report(y_fixed, y_pred, labels=list(RGB_CLASSES)) in again.stdout
    assert json.loads((tmp_path / "fixed.summary.json").read_text())["confusion_matrix"] == (
        confusion_matrix(y_fixed, y_pred, labels=list(RGB_CLASSES)).tolist()
    )

    # The same run again does not overwrite the report without --force.
    refused = run_cli(
        "run", folder, "--model", "rgb", "--repository", model_repository, cwd=tmp_path
    )
    assert refused.returncode == 2 and "exists" in refused.stderr and "--force" in refused.stderr


def test_jsonl_labels_file_and_unknown_classes_warning(
    model_repository: Path, rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, truth = rgb_folder
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nblue/blue_00.png,blue\nred/red_00.png,crimson\n")
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "run",
        folder,
        "--model",
        "rgb",
        "--repository",
        model_repository,
        "--labels",
        labels,
        "--out",
        out,
        "--format",
        "jsonl",
        "--no-recursive",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "no images" in result.stderr  # images are in sub-folders
    result = run_cli(
        "run",
        folder,
        "--model",
        "rgb",
        "--repository",
        model_repository,
        "--labels",
        labels,
        "--out",
        out,
        "--format",
        "jsonl",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "crimson" in result.stderr and "warning" in result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(truth)
    with_labels = {r["path"]: r["true_label"] for r in records if r["true_label"]}
    assert with_labels == {"blue/blue_00.png": "blue", "red/red_00.png": "crimson"}
    assert set(records[0]["probabilities"]) == set(RGB_CLASSES)


def test_models_lists_versions(model_repository: Path, tmp_path: Path) -> None:
    result = run_cli("models", "--repository", model_repository, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "version", "input"]
    gray = next(line for line in lines if line.startswith("gray"))
    assert "28x28x1" in gray and "dark, light" in gray
    rgb = next(line for line in lines if line.startswith("rgb"))
    assert "32x32x3" in rgb and "blue, green, red" in rgb
    empty = run_cli("models", "--repository", tmp_path, cwd=tmp_path)
    assert empty.returncode == 2 and "no complete model versions" in empty.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "known models: gray, rgb"),
        (["--model", "rgb", "--version", "7"], "available versions: 1"),
        (["--model", "rgb", "--labels", "missing.csv"], "labels file missing.csv does not exist"),
    ],
)
def test_bad_model_version_or_labels_exit_2(
    model_repository: Path,
    rgb_folder: tuple[Path, dict[str, str]],
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    folder, _ = rgb_folder
    result = run_cli("run", folder, "--repository", model_repository, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not list(tmp_path.glob("*.csv*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--embeddings", "v.npy", "--engine", "ray"], "--embeddings works with --engine local"),
        (["--out", Path("nowhere", "r.csv")], "cannot write the report: nowhere is not a folder"),
    ],
)
def test_outputs_that_cannot_be_written_exit_2_before_the_model_loads(
    model_repository: Path,
    rgb_folder: tuple[Path, dict[str, str]],
    tmp_path: Path,
    args: list[str | Path],
    message: str,
) -> None:
    folder, _ = rgb_folder
    result = run_cli(
        "run", folder, "--model", "rgb", "--repository", model_repository, *args, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert f"clfbatch: {message}" in result.stderr
    assert not list(tmp_path.glob("*.csv*")) and not list(tmp_path.glob("v.*"))


def test_a_model_that_cannot_be_loaded_exit_2(
    repository_copy: Path, rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The manifest reads, the SavedModel does not: TensorFlow's own error, in one line."""
    folder, _ = rgb_folder
    (repository_copy / "rgb" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    result = run_cli("run", folder, "--model", "rgb", "--repository", repository_copy, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("clfbatch:"))
    assert line.startswith("clfbatch: cannot load model 'rgb': ") and "saved_model.pb" in line
    assert not list(tmp_path.glob("*.csv*"))


def test_a_server_failing_mid_run_exit_3_leaving_only_the_partial_report(
    model_repository: Path, rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The server describes the model, then fails every classify call."""
    folder, _ = rgb_folder
    report = tmp_path / "run.csv"
    server = ServerThread(make_settings(model_repository), BrokenClassifier).start()
    try:
        with Client(server.target) as client:
            client.wait_ready(60)
        result = run_cli(
            "run", folder, "--model", "rgb", "--server", server.target, "--out", report,
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.stop()
    assert result.returncode == 3, result.stderr
    assert f"; incomplete rows left in {report}.partial" in result.stderr
    assert "secret internal detail" not in result.stderr
    assert not report.exists() and (tmp_path / "run.csv.partial").exists()
    assert not list(tmp_path.glob("run.summary*"))


def test_missing_or_empty_folder_exit_2(model_repository: Path, tmp_path: Path) -> None:
    missing = run_cli("run", tmp_path / "nowhere", "--model", "rgb", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    result = run_cli("run", empty, "--model", "rgb", "--repository", model_repository, cwd=tmp_path)
    assert result.returncode == 2 and "no images in" in result.stderr and "1 other" in result.stderr


def test_unreachable_server_fails_fast(
    rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    import socket

    folder, _ = rgb_folder
    with socket.socket() as sock:  # bound but not listening: connections are refused, and
        sock.bind(("127.0.0.1", 0))  # nobody else can take the port while it is held
        port = sock.getsockname()[1]
        server = f"127.0.0.1:{port}"
        result = run_cli("run", folder, "--model", "rgb", "--server", server, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert f"cannot use clfserve at 127.0.0.1:{port}" in result.stderr
    assert not list(tmp_path.glob("*.csv*"))


def test_ctrl_c_leaves_no_complete_report(
    model_repository: Path, rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """SIGINT mid-run: exit 130, "interrupted", only `<report>.partial` left behind.

    The run classifies through a real in-process clfserve whose model call is held, so the
    interrupt lands while the run is provably in flight (no timing assumption either way). It
    starts with SIGINT ignored, as a shell starts a script's background job: clfbatch must
    still stop on it."""
    folder, _ = rgb_folder
    recording = Recording(gate_open=False)
    server = ServerThread(make_settings(model_repository), recording.load).start()
    report = tmp_path / "run.csv"
    process = subprocess.Popen(
        [
            "bash", "-c", 'trap "" INT; exec "$@"', "clfbatch",
            sys.executable, "-m", "batch", "run", folder, "--model", "rgb",
            "--server", server.target, "--out", report, "--batch-size", "1", "--workers", "1",
        ],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    partial = tmp_path / "run.csv.partial"
    try:
        # The first image has reached the model (which holds it) and the report is open.
        while not (recording.calling.is_set() and partial.exists()):
            assert process.poll() is None, process.communicate()[1]
            recording.calling.wait(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        answered = recording.returned  # read while the gate still holds the model
    finally:
        recording.gate.set()
        if process.poll() is None:
            process.kill()
        server.stop()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not report.exists() and partial.exists()
    assert not list(tmp_path.glob("run.summary*"))
    assert answered == 0  # the interrupt came while the first image was still held


def test_watch_is_a_clfbatch_command(model_repository: Path, tmp_path: Path):
    """`clfbatch watch` reaches the daemon: a missing inbox is refused at start with exit 2."""
    result = run_cli(
        "watch", tmp_path / "no-inbox", "--model", "gray", "--out", tmp_path / "out",
        "--repository", model_repository, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
