"""The daemon run in this process, where a test can see its steps: a stop request in the middle of
a batch finishes the batches in hand and nothing more, and copies left in the inbox are never
taken again however many rescans pass."""

from __future__ import annotations

import sqlite3
import threading
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
    daemon = WatchDaemon(settings)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()))
    thread.start()
    try:
        wait_rows(out / "labels.csv", 20)
        with scanned:
            # With batch_ms=0 whatever a rescan enqueues is journaled in the same loop turn,
            # so two more rescans started means one full turn ran after the last row.
            target = scans + 2
            assert scanned.wait_for(lambda: scans >= target, timeout=60)
    finally:
        daemon.request_stop()
        thread.join()
    assert codes == [0]
    assert _journal_rows(out) == 20
    rows = report_rows(out / "labels.csv")
    assert sorted(row["path"] for row in rows) == sorted(originals)
    for row in rows:
        assert (out / row["new_path"]).read_bytes() == originals[row["path"]]
        assert (inbox / row["path"]).read_bytes() == originals[row["path"]]
