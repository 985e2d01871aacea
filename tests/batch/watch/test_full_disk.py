"""A full disk under the output folder: the daemon retries with backoff, files wait in the
inbox, and once there is room again every image ends up placed and reported exactly once.

The output folder is a tiny tmpfs (needs root and mount; skipped otherwise), so the moves also
cross file systems (copy, fsync, link, then unlink).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.batch.watch.helpers import FAST, Daemon, assert_exactly_once, report_rows, wait_rows
from tests.images import encode

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "out"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_retried_and_nothing_is_lost(
    model_repository: Path, tmp_path: Path, small_disk: Path
) -> None:
    inbox, out, report = tmp_path / "inbox", small_disk, small_disk / "labels.csv"
    inbox.mkdir()
    rng = np.random.default_rng(9)
    # Noise PNGs of ~30 KB: 30 of them cannot fit in 400 KB.
    originals = {
        f"big{i:02d}.png": encode(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
        for i in range(30)
    }
    args = ("--model", "rgb", "--repository", model_repository, "--batch-max", "8", *FAST)
    with Daemon(inbox, out, *args, log=tmp_path / "log") as daemon:
        daemon.wait_ready()
        for name, data in originals.items():
            (inbox / name).write_bytes(data)
        deadline = time.monotonic() + 60
        while "retrying" not in daemon.log_text():
            assert time.monotonic() < deadline, daemon.log_text()
            time.sleep(0.1)
        reported = {row["path"] for row in report_rows(report)}
        assert len(reported) < len(originals)
        for name in set(originals) - reported:  # not placed yet: still in the inbox, intact
            assert (inbox / name).read_bytes() == originals[name]
        subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        wait_rows(report, len(originals), daemon, timeout=120)
        assert daemon.stop() == 0, daemon.log_text()
    assert_exactly_once(inbox, out, report, originals)
