"""batch.fsutil.atomic_write: all or nothing, and the permissions of an ordinary file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from batch.fsutil import atomic_write


def test_atomic_write_gives_the_files_ordinary_permissions(tmp_path: Path) -> None:
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")  # what open(path, "w") gives under this process's umask
    written = tmp_path / "report.csv"
    atomic_write(written, lambda path: path.write_text("a,b\n"))
    assert written.read_text() == "a,b\n"
    mode = stat.S_IMODE(written.stat().st_mode)
    assert mode == stat.S_IMODE(ordinary.stat().st_mode)


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "report.csv"
    target.write_text("old")

    def fail(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]
