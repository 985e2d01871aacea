"""Which inbox paths the daemon takes, their true labels, and when a file counts as settled.

Settle times are either 0 or an hour (passed on a fake clock), so no assertion depends on how
fast the machine is."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import batch.watch.inbox as inbox_module
from batch.fsutil import identity_of
from batch.watch.inbox import Inbox, Settler, is_temporary


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_accepts_images_in_the_root_and_class_folders_only(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    out = root / "sorted"
    inbox = Inbox(root, label_dirs={"cat"}, exclude=[out])
    deep = Inbox(root, recursive=True, label_dirs={"cat"}, exclude=[out])
    r = root.resolve()
    for name in ("a.png", "cat/b.JPG", "other/c.png", "cat/x/d.png", "sorted/cat/e.png"):
        _touch(root / name)
    _touch(root / "notes.txt")
    _touch(root / ".hidden.png")
    _touch(root / "up.png.part")
    assert inbox.accepts(r / "a.png") and inbox.accepts(r / "cat/b.JPG")
    assert not inbox.accepts(r / "other/c.png") and not inbox.accepts(r / "cat/x/d.png")
    assert deep.accepts(r / "other/c.png") and deep.accepts(r / "cat/x/d.png")
    for path in ("sorted/cat/e.png", "notes.txt", ".hidden.png", "up.png.part"):
        assert not inbox.accepts(r / path) and not deep.accepts(r / path), path
    assert not inbox.accepts(tmp_path / "elsewhere.png")
    assert sorted(inbox.relative(p) for p in inbox.scan()) == ["a.png", "cat/b.JPG"]
    assert sorted(deep.relative(p) for p in deep.scan()) == [
        "a.png", "cat/b.JPG", "cat/x/d.png", "other/c.png",
    ]  # fmt: skip


def test_true_label_prefers_the_labels_file_then_the_class_folder(tmp_path: Path) -> None:
    root = (tmp_path / "inbox").resolve()
    labels = {"cat/b.png": "dog", "loose.png": "cat"}
    inbox = Inbox(root, recursive=True, label_dirs={"cat", "dog"}, labels_file=labels)
    assert inbox.true_label(root / "cat/b.png") == "dog"  # the file wins over the folder
    assert inbox.true_label(root / "cat/c.png") == "cat"
    assert inbox.true_label(root / "sub/loose.png") == "cat"  # by bare name
    assert inbox.true_label(root / "other/z.png") is None
    assert inbox.true_label(root / "x.png") is None


def test_is_temporary() -> None:
    for name in (".x.png", "x.png~", "x.PART", "x.crdownload", "x.tmp"):
        assert is_temporary(name), name
    assert not is_temporary("x.png")


def test_settler_ready_when_closed_old_or_after_the_settle_time(tmp_path: Path) -> None:
    fresh = _touch(tmp_path / "fresh.png")
    waiting = Settler(settle=3600)
    waiting.note(fresh)
    assert waiting.ready() == [] and len(waiting) == 1  # written just now: not yet settled
    waiting.note(fresh, closed=True)  # the writer closed it
    assert waiting.ready() == [(fresh, identity_of(fresh.stat()))] and len(waiting) == 0
    assert waiting.ready() == []  # each file is handed out once

    old = _touch(tmp_path / "old.png")
    os.utime(old, (1, 1))  # an mtime older than the settle time: it was there before
    waiting.note(old)
    assert waiting.ready() == [(old, identity_of(old.stat()))]

    at_once = Settler(settle=0)
    at_once.note(fresh)
    assert at_once.ready() == [(fresh, identity_of(fresh.stat()))]


def test_settler_forgets_files_that_go_away_or_are_not_regular(tmp_path: Path) -> None:
    settler = Settler(settle=3600)
    gone = _touch(tmp_path / "gone.png")
    settler.note(gone, closed=True)
    gone.unlink()
    settler.note(gone)
    link = tmp_path / "link.png"
    link.symlink_to(_touch(tmp_path / "target.bin"))
    settler.note(link, closed=True)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    settler.note(fifo, closed=True)
    assert settler.ready() == [] and len(settler) == 0


def test_a_folder_removed_during_a_scan_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "inbox"
    for name in ("a/1.png", "b/2.png", "c/3.png"):
        _touch(root / name)
    inbox = Inbox(root, recursive=True)
    found = []
    with caplog.at_level(logging.DEBUG, logger=inbox_module.__name__):
        for path in inbox.scan():
            found.append(inbox.relative(path))
            if path.name == "1.png":
                shutil.rmtree(root / "b")  # the walk has listed it, the scan not yet
    assert found == ["a/1.png", "c/3.png"]
    assert f"cannot list {inbox.root / 'b'}" in caplog.text


def test_a_file_changed_while_it_settles_waits_the_settle_time_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No close event (the writer keeps it open, or the events were lost): the file is ready
    only once its size and mtime held for a whole settle time, measured from its last change."""
    clock = SimpleNamespace(now=0.0)
    fake_time = SimpleNamespace(monotonic=lambda: clock.now, time_ns=time.time_ns)
    monkeypatch.setattr(inbox_module, "time", fake_time)
    path = _touch(tmp_path / "a.png", b"first half")
    settler = Settler(settle=3600)
    settler.note(path)
    path.write_bytes(b"first half, second half")  # no notice of this write
    clock.now += 3600
    assert settler.ready() == [] and len(settler) == 1  # changed: the wait starts again
    clock.now += 3599
    assert settler.ready() == []
    clock.now += 1
    assert settler.ready() == [(path, identity_of(path.stat()))] and len(settler) == 0


def test_a_settling_file_removed_before_it_settles_is_forgotten(tmp_path: Path) -> None:
    """A file still settling (noticed just after it was written) that is gone when its settle
    time is up is dropped, not handed out and not checked again."""
    settler = Settler(settle=0.05)
    brief = _touch(tmp_path / "brief.png")
    settler.note(brief)
    assert settler.ready() == [] and len(settler) == 1
    brief.unlink()
    time.sleep(0.1)
    assert settler.ready() == [] and len(settler) == 0
