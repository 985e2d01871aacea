"""The watch daemon as a real subprocess, and checks of the exactly-once invariant."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from serve.loader import load
from serve.preprocess import preprocess_bytes
from serve.repository import resolve
from tests.conftest import REPO_ROOT
from tests.images import encode, gray_pixels, rgb_pixels

READY_LINE = "watching "
FAST = ("--settle-ms", "250", "--batch-ms", "50", "--rescan-s", "0.5")


def watch_env() -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))


class Daemon:
    """`clfbatch watch INBOX --out OUT ...` (`python -m batch watch`), stderr in a log file."""

    def __init__(self, inbox: Path, out: Path, *args: str | Path, log: Path) -> None:
        self.out = out
        self.log = log
        self._log_start = log.stat().st_size if log.exists() else 0
        self._log_handle = log.open("a")
        command = [sys.executable, "-m", "batch", "watch", str(inbox), "--out", str(out)]
        self.process = subprocess.Popen(
            [*command, *map(str, args)],
            env=watch_env(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_LINE in self.log_text()[self._log_start :]:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited {self.process.returncode}:\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready in {timeout} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # say what the daemon was doing when it did not stop
            raise AssertionError(
                f"daemon still running {timeout} s after signal {sig}:\n{self.log_text()}"
            ) from None
        finally:
            self._log_handle.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self._log_handle.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log_handle.close()


def unfinished(out: Path) -> int:
    """Journal entries not yet reported (nor superseded)."""
    with sqlite3.connect(out / ".clfwatch" / "journal.sqlite") as db:
        query = "SELECT COUNT(*) FROM files WHERE state NOT IN ('reported', 'superseded')"
        return db.execute(query).fetchone()[0]


def report_rows(path: Path) -> list[dict[str, str]]:
    """Every row of a watch report; fails if the file has a torn (newline-less) last line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "report has a torn last line"
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def row_count(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def wait_rows(report: Path, count: int, daemon: Daemon | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while row_count(report) < count:
        if daemon is not None and daemon.process.poll() is not None:
            raise AssertionError(f"daemon died:\n{daemon.log_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{row_count(report)} of {count} rows after {timeout} s")
        time.sleep(0.01)


def image_bytes(kind: str, label: str, rng: np.random.Generator) -> bytes:
    return encode(gray_pixels(label, rng) if kind == "gray" else rgb_pixels(label, rng))


def model_predictions(repository: Path, model: str, files: dict[str, bytes]) -> dict[str, str]:
    """{name: label} from the model called directly (serve.loader) on the shared preprocessing,
    in this process: what the daemon should have predicted for each decodable file."""
    version = resolve(repository, model)
    classifier = load(version)
    pre, labels = version.manifest.preprocessing, version.manifest.classes
    names = list(files)
    probs = classifier.predict(np.stack([preprocess_bytes(files[n], pre) for n in names]))
    return {name: labels[int(i)] for name, i in zip(names, probs.argmax(axis=1), strict=True)}


def placed_files(out: Path) -> set[Path]:
    """Every file in OUT's sub-folders, outside the daemon's state folder."""
    return {
        path
        for path in out.rglob("*")
        if path.is_file() and ".clfwatch" not in path.parts and path.parent != out
    }


def assert_exactly_once(
    inbox: Path, out: Path, report: Path, originals: dict[str, bytes]
) -> list[dict[str, str]]:
    """Each original: one report row, one file under OUT (the row's new_path) with its exact
    bytes, nothing left in the inbox, and no other file under OUT."""
    rows = report_rows(report)
    counts = Counter(row["path"] for row in rows)
    duplicated = {name: n for name, n in counts.items() if n > 1}
    assert not duplicated, f"rows repeated: {duplicated}"
    assert set(counts) == set(originals), (
        f"missing rows: {sorted(set(originals) - set(counts))[:10]}, "
        f"unexpected: {sorted(set(counts) - set(originals))[:10]}"
    )
    left = [p.name for p in inbox.rglob("*") if p.is_file() and p.name in originals]
    assert not left, f"still in the inbox: {left[:10]}"
    for row in rows:
        assert row["new_path"], row
        assert (out / row["new_path"]).read_bytes() == originals[row["path"]], row
    placed = placed_files(out)
    expected = {out / row["new_path"] for row in rows}
    assert placed == expected, f"extra: {sorted(placed - expected)[:5]}"
    return rows


def start_clfserve(repository: Path, workdir: Path, port: int = 0) -> tuple[subprocess.Popen, int]:
    """`python -m serve` on 127.0.0.1 (port 0: a free one); returns the process and its port."""
    port_file = workdir / f"port-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "serve", "--repository", str(repository)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--port-file", str(port_file)]
    command += ["--metrics-port", "off", "--no-watch"]
    process = subprocess.Popen(
        command, env=watch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if port_file.exists() and port_file.read_text().strip():
            return process, int(port_file.read_text())
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise AssertionError(f"clfserve did not start (exit code {process.returncode})")
