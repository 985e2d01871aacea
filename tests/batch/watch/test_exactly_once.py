"""Exactly once under stress, `clfbatch watch` as a real subprocess: bursts, slow writers, corrupt
and special files, and SIGKILL at random moments (replay one with CLF_TEST_SEED=<seed>)."""

from __future__ import annotations

import os
import random
import signal
import threading
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
    unfinished,
    wait_rows,
)
from tests.conftest import replayable_seed
from tests.images import GRAY_CLASSES, RGB_CLASSES

pytestmark = pytest.mark.slow


def _slow_write(path: Path, data: bytes, seconds: float = 1.0, chunks: int = 10) -> None:
    """One open, `chunks` writes spread over `seconds`, then close (an upload, a scanner)."""
    step = -(-len(data) // chunks)
    with path.open("wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            time.sleep(seconds / chunks)


def test_bursts_slow_writers_and_corrupt_files_each_end_up_exactly_once(
    model_repository: Path, tmp_path: Path
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    rng = np.random.default_rng(1)
    originals: dict[str, bytes] = {}
    args = ("--model", "gray", "--repository", model_repository, "--batch-max", "32")
    with Daemon(inbox, out, *args, *FAST, "--settle-ms", "500", log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        (inbox / ".hidden.png").write_bytes(b"never read")
        (inbox / "upload.png.part").write_bytes(b"still arriving")
        os.mkfifo(inbox / "pipe.png")  # reading it would block forever
        (inbox / "link.png").symlink_to(tmp_path / "log")
        with open(os.path.join(os.fsencode(inbox), b"latin1-\xe9.png"), "wb") as handle:
            handle.write(image_bytes("gray", "dark", rng))  # a name that is not UTF-8
        slow = []
        for burst in range(5):
            for index in range(96):
                name = f"b{burst}_{index:03d}.png"
                originals[name] = image_bytes("gray", GRAY_CLASSES[index % 2], rng)
                if index % 8 == 0:  # the write-then-rename pattern
                    (inbox / f".{name}.tmp").write_bytes(originals[name])
                    (inbox / f".{name}.tmp").rename(inbox / name)
                else:
                    (inbox / name).write_bytes(originals[name])
            for index in range(2):
                name = f"slow{burst}_{index}.png"
                originals[name] = image_bytes("gray", "light", rng)
                thread = threading.Thread(target=_slow_write, args=(inbox / name, originals[name]))
                thread.start()
                slow.append(thread)
                name = f"corrupt{burst}_{index}.png"
                good = image_bytes("gray", "dark", rng)
                originals[name] = good[: len(good) // 3] if index else b"\x89PNG not really"
                (inbox / name).write_bytes(originals[name])
            time.sleep(0.3)
        for thread in slow:
            thread.join()
        assert len(originals) == 500
        wait_rows(out / "labels.csv", 500, daemon)
        assert daemon.stop() == 0, daemon.log_text()
    rows = assert_exactly_once(inbox, out, out / "labels.csv", originals)
    for row in rows:
        corrupt = row["path"].startswith("corrupt")
        assert row["new_path"].startswith("_rejected/") == corrupt, row
        assert bool(row["error"]) == corrupt, row
    decodable = {row["path"]: originals[row["path"]] for row in rows if not row["error"]}
    expected = model_predictions(model_repository, "gray", decodable)
    for row in rows:
        if not row["error"]:
            assert row["predicted"] == expected[row["path"]], row
            assert row["new_path"] == f"{row['predicted']}/{row['path']}", row
    assert (inbox / ".hidden.png").read_bytes() == b"never read"
    assert (inbox / "upload.png.part").read_bytes() == b"still arriving"
    assert (inbox / "pipe.png").exists() and (inbox / "link.png").is_symlink()
    assert os.path.exists(os.path.join(os.fsencode(inbox), b"latin1-\xe9.png"))
    assert unfinished(out) == 0


def test_sigkill_at_random_moments_three_times_then_every_file_exactly_once(
    model_repository: Path, tmp_path: Path
) -> None:
    seed = replayable_seed()
    chance = random.Random(seed)
    inbox, out, report = tmp_path / "inbox", tmp_path / "out", tmp_path / "out" / "labels.csv"
    inbox.mkdir()
    rng = np.random.default_rng(seed)
    originals = {
        f"img{i:04d}.png": image_bytes("rgb", RGB_CLASSES[i % 3], rng) for i in range(1000)
    }
    names = list(originals)

    def writer() -> None:  # 1,000 files in bursts of 25, over ~8 s
        for start in range(0, len(names), 25):
            for name in names[start : start + 25]:
                (inbox / name).write_bytes(originals[name])
            time.sleep(0.2)

    args = ("--model", "rgb", "--repository", model_repository, "--batch-max", "16", *FAST)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        kills = []
        for _ in range(3):
            with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
                daemon.wait_ready()
                target = row_count(report) + chance.randrange(10, 120)
                wait_rows(report, target, daemon)
                time.sleep(chance.uniform(0, 0.08))
                daemon.process.send_signal(signal.SIGKILL)
                daemon.process.wait(10)
                kills.append(row_count(report))
    finally:
        thread.join()
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        wait_rows(report, 1000, daemon)
        assert daemon.stop() == 0
    try:
        assert_exactly_once(inbox, out, report, originals)
        assert unfinished(out) == 0
    except AssertionError as exc:
        raise AssertionError(f"CLF_TEST_SEED={seed}, rows at the kills {kills}: {exc}") from exc
