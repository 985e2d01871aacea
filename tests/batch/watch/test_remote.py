"""`clfbatch watch --server`: classification through a real clfserve, and a server that goes
away mid-stream: the files wait in the inbox, the daemon retries, nothing is lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.batch.watch.helpers import (
    FAST,
    Daemon,
    assert_exactly_once,
    image_bytes,
    model_predictions,
    row_count,
    start_clfserve,
    wait_rows,
)

pytestmark = pytest.mark.slow


def test_files_wait_in_the_inbox_while_the_server_is_away(
    model_repository: Path, tmp_path: Path
) -> None:
    inbox, out, report = tmp_path / "inbox", tmp_path / "out", tmp_path / "out" / "labels.csv"
    inbox.mkdir()
    rng = np.random.default_rng(8)
    originals = {f"r{i:02d}.png": image_bytes("gray", "light", rng) for i in range(10)}
    server, port = start_clfserve(model_repository, tmp_path)
    try:
        args = ("--model", "gray", "--server", f"127.0.0.1:{port}", *FAST)
        with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
            daemon.wait_ready()
            for name in list(originals)[:5]:
                (inbox / name).write_bytes(originals[name])
            wait_rows(report, 5, daemon)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            for name in list(originals)[5:]:
                (inbox / name).write_bytes(originals[name])
            deadline = time.monotonic() + 30
            while "retrying" not in daemon.log_text():
                assert time.monotonic() < deadline, daemon.log_text()
                time.sleep(0.1)
            assert row_count(report) == 5
            assert all((inbox / name).exists() for name in list(originals)[5:])
            server, _ = start_clfserve(model_repository, tmp_path, port=port)
            wait_rows(report, 10, daemon, timeout=120)
            assert daemon.stop() == 0, daemon.log_text()
    finally:
        server.kill()
        server.wait(10)
    rows = assert_exactly_once(inbox, out, report, originals)
    expected = model_predictions(model_repository, "gray", originals)
    assert {row["model"] for row in rows} == {"gray"}
    assert {row["path"]: row["predicted"] for row in rows} == expected
