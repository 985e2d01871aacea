"""`clfbatch watch` options, each shown to change what the daemon does (a real subprocess, a real
inotify watcher, real files): `--report`, `--top-k`, `--log-json`, `--runtime`, `--recursive`,
`--batch-ms`, `--journal`, `--rescan-s`.

Files written before a daemon starts get an mtime an hour back: the settle rule then takes them
all in the daemon's first scan, together, so what one batch holds does not depend on timing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve.loader import load
from serve.preprocess import preprocess_bytes
from serve.repository import resolve
from serve.runtime import TOLERANCE
from tests.batch.watch.helpers import (
    FAST,
    Daemon,
    image_bytes,
    model_predictions,
    report_rows,
    wait_rows,
)
from tests.images import RGB_CLASSES

HOUR_AGO = time.time() - 3600
BATCH_LINE = re.compile(r"batch of (\d+): ")
TEXT_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def write_old(path: Path, data: bytes) -> None:
    """Write `path` with an mtime an hour back (complete by the settle rule when first seen)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (HOUR_AGO, HOUR_AGO))


def wait_for(
    condition: Callable[[], object], daemon: Daemon, what: str, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if daemon.process.poll() is not None:
            raise AssertionError(f"daemon exited {daemon.process.returncode}:\n{daemon.log_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s:\n{daemon.log_text()}")
        time.sleep(0.01)


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def batch_sizes(daemon: Daemon) -> list[int]:
    return [int(n) for n in BATCH_LINE.findall(daemon.log_text())]


@pytest.mark.slow
def test_report_top_k_runtime_and_json_log(model_repository: Path, tmp_path: Path) -> None:
    """`--report` puts the rows where it says and nowhere else, `--top-k 2` keeps exactly the
    two best classes in order, `--runtime litert` serves from LiteRT (with TensorFlow's
    answers), `--log-json` makes every log line a JSON object. Without `--recursive`, files in
    a sub-folder that is not a class name stay where they are."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    report = tmp_path / "elsewhere" / "arrivals.csv"
    rng = np.random.default_rng(11)
    files = {f"{label}.png": image_bytes("rgb", label, rng) for label in RGB_CLASSES}
    nested = {"nested/n.png": image_bytes("rgb", "red", rng)}
    nested["nested/deeper/d.png"] = image_bytes("rgb", "blue", rng)
    for name, data in {**files, **nested}.items():
        write_old(inbox / name, data)
    args = ("--model", "rgb", "--repository", model_repository, "--report", report, *FAST)
    args = (*args, "--top-k", "2", "--runtime", "litert", "--log-json")
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        wait_rows(report, len(files), daemon)
        assert daemon.stop() == 0, daemon.log_text()
    rows = report_rows(report)
    assert not (out / "labels.csv").exists()
    # Every file of the first scan went in one batch: the nested ones were not taken.
    assert sorted(row["path"] for row in rows) == sorted(files)
    for name, data in nested.items():
        assert (inbox / name).read_bytes() == data
    version = resolve(model_repository, "rgb")  # TensorFlow, in this process
    classes = version.manifest.classes
    pre = version.manifest.preprocessing
    batch = np.stack([preprocess_bytes(files[row["path"]], pre) for row in rows])
    for row, tf_probs in zip(rows, load(version).predict(batch), strict=True):
        assert row["predicted"] == classes[int(tf_probs.argmax())], row
        probs = {c: float(row[f"prob_{c}"]) for c in classes}
        assert max(abs(probs[c] - float(p)) for c, p in zip(classes, tf_probs, strict=True)) <= (
            TOLERANCE + 1e-6  # the report keeps six decimals
        )
        best_two = sorted(probs, key=lambda c: -probs[c])[:2]
        assert row["top_k_labels"].split(";") == best_two, row
        scores = [float(s) for s in row["top_k_scores"].split(";")]
        assert scores == [probs[c] for c in best_two], row
        assert (out / row["new_path"]).read_bytes() == files[row["path"]]
    lines = [line for line in daemon.log_text().splitlines() if line.strip()]
    assert not [line for line in lines if TEXT_LOG_LINE.match(line)], daemon.log_text()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message"}, record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record
    messages = [record["message"] for record in records]
    assert any(m.startswith("rgb v1: LiteRT serves it") for m in messages), messages
    assert any(m.startswith("watching ") for m in messages), messages
    assert any(BATCH_LINE.match(m) for m in messages), messages
    assert {"level": "info", "logger": "clfbatch.watch", "message": "stopped"} in [
        {key: r[key] for key in ("level", "logger", "message")} for r in records
    ]


def test_report_jsonl_starts_and_gets_json_rows(model_repository: Path, tmp_path: Path) -> None:
    inbox, out, report = tmp_path / "inbox", tmp_path / "out", tmp_path / "arrivals.jsonl"
    write_old(inbox / "a.png", image_bytes("gray", "dark", np.random.default_rng(16)))
    args = ("--model", "gray", "--repository", model_repository, "--report", report, *FAST)
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        wait_for(lambda: jsonl_rows(report), daemon, "a row")
        assert daemon.stop() == 0, daemon.log_text()
    (row,) = jsonl_rows(report)
    assert row["path"] == "a.png" and row["new_path"] == f"{row['predicted']}/a.png"
    assert len(row["top_k"]) == 2  # both classes of `gray`


@pytest.mark.slow
def test_recursive_takes_files_in_every_sub_folder(model_repository: Path, tmp_path: Path) -> None:
    """With `--recursive`, files at any depth are taken, present at start or arriving in a
    folder made later (without it they stay: the test above)."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    rng = np.random.default_rng(12)
    files = {
        "top.png": image_bytes("gray", "dark", rng),
        "nested/n.png": image_bytes("gray", "light", rng),
        "nested/deeper/d.png": image_bytes("gray", "dark", rng),
    }
    for name, data in files.items():
        write_old(inbox / name, data)
    args = ("--model", "gray", "--repository", model_repository, "--recursive", *FAST)
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        wait_rows(out / "labels.csv", 3, daemon)
        files["later/deep/x.png"] = image_bytes("gray", "light", rng)
        (inbox / "later" / "deep").mkdir(parents=True)
        (inbox / "later" / "deep" / "x.png").write_bytes(files["later/deep/x.png"])
        wait_rows(out / "labels.csv", 4, daemon)
        assert daemon.stop() == 0, daemon.log_text()
    rows = report_rows(out / "labels.csv")
    assert sorted(row["path"] for row in rows) == sorted(files)
    expected = model_predictions(model_repository, "gray", files)
    for row in rows:
        assert row["predicted"] == expected[row["path"]], row
        assert row["new_path"] == f"{row['predicted']}/{Path(row['path']).name}", row
        assert (out / row["new_path"]).read_bytes() == files[row["path"]]
        assert not (inbox / row["path"]).exists()


@pytest.mark.slow
def test_batch_ms_holds_a_partial_batch_until_it_fills(
    model_repository: Path, tmp_path: Path
) -> None:
    """`--batch-max 4 --batch-ms 3600000`: of five files, four go at once and the fifth waits
    for three more rather than going alone (the default 100 ms would send it in a batch of 1
    long before the three later files, which need `--settle-ms` to pass, can join it)."""
    inbox, out, staging = tmp_path / "inbox", tmp_path / "out", tmp_path / "staging"
    staging.mkdir()
    rng = np.random.default_rng(13)
    first = {f"a{i}.png": image_bytes("gray", "dark", rng) for i in range(5)}
    for name, data in first.items():
        write_old(inbox / name, data)
    args = ("--model", "gray", "--repository", model_repository, "--batch-max", "4")
    args = (*args, "--batch-ms", "3600000", "--settle-ms", "2000", "--rescan-s", "0.5")
    report = out / "labels.csv"
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        wait_for(lambda: batch_sizes(daemon), daemon, "first batch")
        assert batch_sizes(daemon) == [4], daemon.log_text()
        later = {f"b{i}.png": image_bytes("gray", "light", rng) for i in range(3)}
        for name, data in later.items():  # moved in: no close-after-write, so they settle
            (staging / name).write_bytes(data)
            (staging / name).rename(inbox / name)
        wait_rows(report, 8, daemon)
        wait_for(lambda: len(batch_sizes(daemon)) >= 2, daemon, "second batch")
        assert daemon.stop() == 0, daemon.log_text()
    assert batch_sizes(daemon) == [4, 4], daemon.log_text()
    rows = report_rows(report)
    held = set(first) - {row["path"] for row in rows[:4]}
    assert len(held) == 1 and {row["path"] for row in rows[4:]} == held | set(later)


@pytest.mark.slow
def test_journal_path_is_used_and_a_restart_with_it_does_not_redo_files(
    model_repository: Path, tmp_path: Path
) -> None:
    """`--journal PATH` keeps the journal there (not in OUT/.clfwatch/); a restart with the same
    journal skips the files it has done (`--action copy` leaves them in the inbox)."""
    inbox, out, journal = tmp_path / "inbox", tmp_path / "out", tmp_path / "state" / "j.sqlite"
    rng = np.random.default_rng(14)
    files = {f"k{i}.png": image_bytes("gray", ("dark", "light")[i % 2], rng) for i in range(3)}
    for name, data in files.items():
        write_old(inbox / name, data)
    args = ("--model", "gray", "--repository", model_repository, "--action", "copy", *FAST)
    args = (*args, "--journal", journal)
    report = out / "labels.csv"
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        wait_rows(report, 3, daemon)
        assert daemon.stop() == 0, daemon.log_text()
    assert not (out / ".clfwatch" / "journal.sqlite").exists()
    with sqlite3.connect(journal) as db:
        done = dict(db.execute("SELECT source, state FROM files").fetchall())
    assert {Path(source).name: state for source, state in done.items()} == dict.fromkeys(
        files, "reported"
    )
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        # Taken in the same first scan as the three old files would be: once its row is there,
        # theirs would be too.
        (inbox / "new.png").write_bytes(image_bytes("gray", "dark", rng))
        wait_rows(report, 4, daemon)
        assert daemon.stop() == 0, daemon.log_text()
    rows = report_rows(report)
    assert sorted(row["path"] for row in rows) == sorted([*files, "new.png"])
    assert all((inbox / name).exists() for name in files)


def _lose_events(daemon: Daemon, inbox: Path, name: str, data: bytes) -> None:
    """Write `inbox/name` while the daemon's inotify queue is full, so its events are dropped
    by the kernel (what an event storm or a network file system does), then wait until the
    watcher has rebuilt its watches and events flow again."""
    junk = [inbox / "junk" / "a.txt", inbox / "junk" / "b.txt"]  # watched, never taken
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    daemon.process.send_signal(signal.SIGSTOP)
    try:
        # Alternating two files (the kernel merges repeats of one event), well past the limit
        # (a stopped reader may still have taken some in before it stopped).
        for index in range(4 * limit):
            os.utime(junk[index % 2])
        (inbox / name).write_bytes(data)
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    reconciling = "Inotify queue overflowed; reconciling recursive watches"
    wait_for(lambda: reconciling in daemon.log_text(), daemon, "overflow warning")
    # Events on files made while the watches are rebuilt are lost too: probe with names the
    # daemon logs once when it notices them until one is noticed.
    for attempt in range(60):
        probe = f"probe{attempt}.txt"
        (inbox / probe).write_text("")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if f"leaving {probe} in the inbox" in daemon.log_text():
                return
            time.sleep(0.02)
    raise AssertionError(f"no event noticed after the overflow:\n{daemon.log_text()}")


@pytest.mark.slow
def test_rescan_s_finds_files_whose_events_were_lost(
    model_repository: Path, tmp_path: Path
) -> None:
    """A file whose events the kernel dropped is found by the rescan every `--rescan-s`; with
    `--rescan-s 3600` it stays in the inbox while the daemon goes on taking other files for
    longer than the default period (2 s) by the daemon's own clock (its rows' times)."""
    rng = np.random.default_rng(15)
    for period in ("0.2", "3600"):
        inbox, out = tmp_path / period / "inbox", tmp_path / period / "out"
        (inbox / "junk").mkdir(parents=True)
        for junk in ("a.txt", "b.txt"):
            (inbox / "junk" / junk).write_text("")
        report = out / "labels.csv"
        args = ("--model", "gray", "--repository", model_repository, "--rescan-s", period)
        args = (*args, "--settle-ms", "0", "--batch-ms", "0")
        with Daemon(inbox, out, *args, log=tmp_path / period / "log") as daemon:
            daemon.wait_ready()
            (inbox / "first.png").write_bytes(image_bytes("gray", "dark", rng))
            wait_rows(report, 1, daemon)
            lost = image_bytes("gray", "light", rng)
            _lose_events(daemon, inbox, "lost.png", lost)
            if period == "0.2":
                wait_rows(report, 2, daemon)
                assert report_rows(report)[1]["path"] == "lost.png"
            else:
                (inbox / "tick0.png").write_bytes(image_bytes("gray", "dark", rng))
                wait_rows(report, 2, daemon)
                start = _stamp(report_rows(report)[-1]["time"])
                index = 0
                while _stamp(report_rows(report)[-1]["time"]) - start < 3.0:
                    index += 1  # each arrival wakes the loop, where a due rescan would run
                    (inbox / f"tick{index}.png").write_bytes(image_bytes("gray", "dark", rng))
                    wait_rows(report, 2 + index, daemon)
                assert "lost.png" not in {row["path"] for row in report_rows(report)}
                assert (inbox / "lost.png").read_bytes() == lost
            assert daemon.stop() == 0, daemon.log_text()


def _stamp(text: str) -> float:
    """A report row's `time` (the daemon's clock) in seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_reload_s_is_kept_by_an_idle_daemon_whatever_rescan_s(
    repository_copy: Path, tmp_path: Path
) -> None:
    """An idle daemon (no files, rescans an hour apart) still looks for a new model version
    every `--reload-s`."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    args = ("--model", "gray", "--repository", repository_copy, "--settle-ms", "50")
    args = (*args, "--rescan-s", "3600", "--reload-s", "0.2")
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        staging = repository_copy / "gray" / ".tmp-copy"
        shutil.copytree(repository_copy / "gray" / "1", staging)
        staging.rename(repository_copy / "gray" / "2")
        wait_for(lambda: "now using model gray version 2" in daemon.log_text(), daemon,
                 "switch to version 2", timeout=60)  # fmt: skip
        assert daemon.stop() == 0
