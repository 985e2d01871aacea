"""`clfbatch watch` as a real subprocess: SIGTERM, labelled arrivals and running metrics, the copy
action, new model versions, a second daemon on the same folder, start-up errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from batch.backends import open_backend
from serve.preprocess import preprocess_bytes
from tests.batch.watch.helpers import (
    FAST,
    Daemon,
    image_bytes,
    report_rows,
    unfinished,
    wait_rows,
    watch_env,
)
from tests.conftest import REPO_ROOT
from tests.images import GRAY_CLASSES, RGB_CLASSES


@pytest.mark.slow
def test_sigterm_mid_batch_exits_0_and_files_present_before_start_are_processed(
    model_repository: Path, tmp_path: Path
) -> None:
    inbox, out, report = tmp_path / "inbox", tmp_path / "out", tmp_path / "out" / "labels.csv"
    inbox.mkdir()
    rng = np.random.default_rng(3)
    originals = {f"early{i:03d}.png": image_bytes("gray", "dark", rng) for i in range(300)}
    for name, data in originals.items():
        (inbox / name).write_bytes(data)
    args = ("--model", "gray", "--repository", model_repository, "--batch-max", "16", *FAST)
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        wait_rows(report, 1, daemon)
        assert daemon.stop() == 0, daemon.log_text()
        assert " INFO stopped" in daemon.log_text(), daemon.log_text()
    rows = report_rows(report)
    assert rows and unfinished(out) == 0
    reported = {row["path"] for row in rows}
    assert len(reported) == len(rows)  # (how far it got depends on the machine: see test_daemon)
    for name, data in originals.items():  # placed once if reported, else untouched in the inbox
        if name in reported:
            assert not (inbox / name).exists()
        else:
            assert (inbox / name).read_bytes() == data
    for row in rows:
        assert (out / row["new_path"]).read_bytes() == originals[row["path"]]


@pytest.mark.slow
def test_labelled_arrivals_running_metrics_equal_clfbatch_report(
    model_repository: Path, tmp_path: Path
) -> None:
    inbox, out, report = tmp_path / "inbox", tmp_path / "out", tmp_path / "out" / "labels.csv"
    inbox.mkdir()
    labels_file = tmp_path / "truth.csv"
    labels_file.write_text("path,label\nloose_red.png,red\nloose_blue.png,red\n")
    rng = np.random.default_rng(4)
    args = ("--model", "rgb", "--repository", model_repository, "--labels", labels_file, *FAST)
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        expected = 0
        for label in RGB_CLASSES:  # class folders created after start
            (inbox / label).mkdir()
            for index in range(12):
                content = label if index else RGB_CLASSES[(RGB_CLASSES.index(label) + 1) % 3]
                (inbox / label / f"{label}{index}.png").write_bytes(
                    image_bytes("rgb", content, rng)
                )
                expected += 1
        (inbox / "loose_red.png").write_bytes(image_bytes("rgb", "red", rng))
        (inbox / "loose_blue.png").write_bytes(image_bytes("rgb", "blue", rng))  # labelled red
        (inbox / "unlabelled.png").write_bytes(image_bytes("rgb", "green", rng))
        wait_rows(report, expected + 3, daemon)
        summary = out / "labels.summary.json"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # rewritten after the batches, while running
            if summary.exists() and json.loads(summary.read_text())["total"] == expected + 2:
                break
            time.sleep(0.1)
        running = json.loads(summary.read_text())
        running_text = (out / "labels.summary.txt").read_text()
        assert daemon.stop() == 0
    rows = report_rows(report)
    truth = {row["path"]: row["true_label"] for row in rows}
    assert truth["loose_red.png"] == "red" and truth["loose_blue.png"] == "red"
    assert truth["unlabelled.png"] == "" and truth["green/green3.png"] == "green"
    labelled = [row for row in rows if row["true_label"]]
    accuracy = sum(row["predicted"] == row["true_label"] for row in labelled) / len(labelled)
    assert running["total"] == len(labelled) == expected + 2
    assert running["accuracy"] == pytest.approx(accuracy)
    recomputed = subprocess.run(
        [sys.executable, "-m", "batch", "report", str(report), "--out-prefix", str(tmp_path / "r")],
        env=watch_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert recomputed.returncode == 0, recomputed.stderr
    assert (tmp_path / "r.summary.txt").read_text() == running_text
    again = json.loads((tmp_path / "r.summary.json").read_text())
    for key in ("accuracy", "per_class", "macro avg", "weighted avg", "confusion_matrix"):
        assert again[key] == running[key], key
    assert (out / "labels.confusion.csv").read_text() == (tmp_path / "r.confusion.csv").read_text()


@pytest.mark.slow
def test_copy_action_never_takes_a_file_twice_and_new_versions_are_picked_up(
    repository_copy: Path, tmp_path: Path
) -> None:
    inbox, out, report = tmp_path / "inbox", tmp_path / "out", tmp_path / "out" / "labels.csv"
    inbox.mkdir()
    rng = np.random.default_rng(6)
    originals = {}
    for index in range(20):
        label = GRAY_CLASSES[index % 2]
        originals[f"c{index:02d}.png"] = image_bytes("gray", label, rng)
        (inbox / f"c{index:02d}.png").write_bytes(originals[f"c{index:02d}.png"])
    # A threshold between the confidences of this model on these files: both sides are used.
    backend = open_backend("gray", repository=repository_copy)
    batch = np.stack([preprocess_bytes(data, backend.preprocessing) for data in originals.values()])
    confidences = sorted(backend.classify(batch).max(axis=1))
    backend.close()
    threshold = float(confidences[9] + confidences[10]) / 2
    args = ("--model", "gray", "--repository", repository_copy, "--action", "copy", *FAST)
    args = (*args, "--min-confidence", str(threshold), "--reload-s", "0.2")
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        wait_rows(report, 20, daemon)
        # A second daemon on the same output folder would break exactly-once: refused.
        second = subprocess.run(
            [sys.executable, "-m", "batch", "watch", str(inbox), "--out", str(out), *args],
            env=watch_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2 and "already" in second.stderr, second.stderr
        # A new version appears in the repository (complete, atomically): used from then on.
        staging = repository_copy / "gray" / ".tmp-copy"
        shutil.copytree(repository_copy / "gray" / "1", staging)
        staging.rename(repository_copy / "gray" / "2")
        deadline = time.monotonic() + 60
        while "now using model gray version 2" not in daemon.log_text():
            assert time.monotonic() < deadline, daemon.log_text()
            time.sleep(0.1)
        for index in range(4):
            originals[f"v2_{index}.png"] = image_bytes("gray", "light", rng)
            (inbox / f"v2_{index}.png").write_bytes(originals[f"v2_{index}.png"])
        wait_rows(report, 24, daemon)
        assert daemon.stop() == 0
    rows = report_rows(report)  # the copies left in the inbox were never taken again
    assert sorted(row["path"] for row in rows) == sorted(originals)
    for row in rows:
        assert row["version"] == ("2" if row["path"].startswith("v2_") else "1"), row
    assert 0 < sum(row["new_path"].startswith("_uncertain/") for row in rows) < len(rows)
    for row in rows:
        uncertain = float(row["confidence"]) < threshold
        assert row["new_path"].startswith("_uncertain/") == uncertain, row
        assert (out / row["new_path"]).read_bytes() == originals[row["path"]]
        assert (inbox / row["path"]).read_bytes() == originals[row["path"]]


def _watch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batch", "watch", *map(str, args)],
        env=watch_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_start_up_errors_exit_2_with_a_clear_message(
    model_repository: Path, tmp_path: Path
) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "file").write_text("")
    repo = ("--repository", model_repository)
    missing = _watch(tmp_path / "nope", "--model", "gray", "--out", tmp_path / "o", *repo)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    unwritable = _watch(tmp_path / "inbox", "--model", "gray", "--out", tmp_path / "file/o", *repo)
    assert unwritable.returncode == 2 and "not writable" in unwritable.stderr
    unknown = _watch(tmp_path / "inbox", "--model", "cat", "--out", tmp_path / "o", *repo)
    assert unknown.returncode == 2 and "gray, rgb" in unknown.stderr
    version = _watch(
        tmp_path / "inbox", "-m", "gray", "--version", "9", "--out", tmp_path / "o", *repo
    )
    assert version.returncode == 2 and "available versions: 1" in version.stderr
    both = _watch(
        tmp_path / "inbox", "-m", "gray", "--version", "1", "--version-label", "fast",
        "--out", tmp_path / "o", *repo,
    )  # fmt: skip
    assert both.returncode == 2 and "--version or --version-label, not both" in both.stderr
    labels = _watch(
        tmp_path / "inbox", "-m", "gray", "--labels", tmp_path / "truth.csv",
        "--out", tmp_path / "o", *repo,
    )  # fmt: skip
    assert labels.returncode == 2, labels.stderr
    assert f"labels file {tmp_path / 'truth.csv'} does not exist" in labels.stderr
