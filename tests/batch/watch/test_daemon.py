"""The daemon run in this process, where a test can see its steps: a stop request in the middle of
a batch finishes the batches in hand and nothing more, and copies left in the inbox are never
taken again however many rescans pass."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import batch.watch.startup as startup_module
from batch.watch.daemon import WatchDaemon
from batch.watch.inbox import Inbox
from batch.watch.settings import Action, WatchSettings
from tests.batch.watch.helpers import image_bytes, report_rows, unfinished, wait_rows

pytestmark = pytest.mark.slow


def _inbox(root: Path, count: int) -> dict[str, bytes]:
    root.mkdir()
    rng = np.random.default_rng(5)
    originals = {f"f{i:03d}.png": image_bytes("gray", "dark", rng) for i in range(count)}
    for name, data in originals.items():
        (root / name).write_bytes(data)
    return originals


@contextlib.contextmanager
def _running(settings: WatchSettings) -> Iterator[list[int]]:
    """The daemon on a thread; on leaving, a stop request, and its exit code lands in the list."""
    daemon = WatchDaemon(settings)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()))
    thread.start()
    try:
        yield codes
    finally:
        daemon.request_stop()
        thread.join()


def _journal_rows(out: Path) -> int:
    with sqlite3.connect(out / ".clfwatch" / "journal.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM files").fetchone()[0]


def test_a_stop_request_mid_batch_finishes_the_batches_in_hand_and_nothing_more(
    model_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    originals = _inbox(inbox, 300)
    settings = WatchSettings(
        inbox=inbox, out=out, model="gray", repository=model_repository,
        batch_max=16, settle_ms=0, batch_ms=0,
    )  # fmt: skip
    daemon = WatchDaemon(settings)
    calls: list[int] = []
    real_open = startup_module.open_chosen

    def open_stopping(*args: Any, **kwargs: Any) -> Any:
        backend = real_open(*args, **kwargs)
        classify = backend.classify

        def classify_and_stop(batch: np.ndarray) -> np.ndarray:
            calls.append(len(batch))
            daemon.request_stop()  # as SIGTERM would, while this batch is in the model
            return classify(batch)

        backend.classify = classify_and_stop  # type: ignore[method-assign]
        return backend

    monkeypatch.setattr(startup_module, "open_chosen", open_stopping)
    assert daemon.run() == 0
    rows = report_rows(out / "labels.csv")
    # The batch in the model and, at most, the one already taken in behind it.
    assert calls in ([16], [16, 16]) and len(rows) == sum(calls), calls
    assert unfinished(out) == 0
    reported = {row["path"] for row in rows}
    for name, data in originals.items():
        if name in reported:
            assert not (inbox / name).exists()
        else:
            assert (inbox / name).read_bytes() == data


def test_copies_left_in_the_inbox_are_never_taken_again(
    model_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    originals = _inbox(inbox, 20)
    settings = WatchSettings(
        inbox=inbox, out=out, model="gray", repository=model_repository, action=Action.copy,
        settle_ms=0, batch_ms=0, rescan_s=0.05,
    )  # fmt: skip
    scanned = threading.Condition()
    scans = 0
    real_scan = Inbox.scan

    def counted_scan(self: Inbox) -> Any:
        nonlocal scans
        with scanned:
            scans += 1
            scanned.notify_all()
        return real_scan(self)

    monkeypatch.setattr(Inbox, "scan", counted_scan)
    with _running(settings) as codes:
        wait_rows(out / "labels.csv", 20)
        with scanned:
            # With batch_ms=0 whatever a rescan enqueues is journaled in the same loop turn,
            # so two more rescans started means one full turn ran after the last row.
            target = scans + 2
            assert scanned.wait_for(lambda: scans >= target, timeout=60)
    assert codes == [0]
    assert _journal_rows(out) == 20
    rows = report_rows(out / "labels.csv")
    assert sorted(row["path"] for row in rows) == sorted(originals)
    for row in rows:
        assert (out / row["new_path"]).read_bytes() == originals[row["path"]]
        assert (inbox / row["path"]).read_bytes() == originals[row["path"]]


def test_a_busy_daemon_puts_its_rescan_off(
    model_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While batches are in hand the rescan (every 0.05 s here) waits up to ten periods: twenty
    files in batches of two, each batch finishing in 0.1 s, see a rescan at most every 0.5 s,
    not one per batch; every file is still taken once."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    originals = _inbox(inbox, 20)
    settings = WatchSettings(
        inbox=inbox, out=out, model="gray", repository=model_repository,
        settle_ms=0, batch_ms=0, batch_max=2, rescan_s=0.05,
    )  # fmt: skip
    scans: list[float] = []
    finishes: list[float] = []
    real_scan, real_finish = Inbox.scan, WatchDaemon._finish

    def counted_scan(self: Inbox) -> Any:
        scans.append(time.monotonic())
        return real_scan(self)

    def slow_finish(self: WatchDaemon, *args: Any) -> None:
        time.sleep(0.1)
        real_finish(self, *args)
        finishes.append(time.monotonic())

    monkeypatch.setattr(Inbox, "scan", counted_scan)
    monkeypatch.setattr(WatchDaemon, "_finish", slow_finish)
    with _running(settings) as codes:
        wait_rows(out / "labels.csv", 20)
    assert codes == [0]
    assert sorted(row["path"] for row in report_rows(out / "labels.csv")) == sorted(originals)
    assert len(finishes) == 10
    busy = [t for t in scans if finishes[0] < t < finishes[-1]]
    assert len(busy) <= (finishes[-1] - finishes[0]) / 0.5 + 1, (busy, finishes)
