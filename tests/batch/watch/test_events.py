"""File-system events: an image written and closed in the inbox wakes the loop and is reported
as closed; other files are not reported; folders that appear later are watched (and what they
already hold noticed); the observer thread is gone after the `with`; without inotify the
source stays empty and the rescan alone finds files."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import batch.watch.events as events_module
from batch.watch.events import EventSource
from batch.watch.inbox import Inbox
from batch.watch.wake import Wake


def collect_until(
    events: EventSource, wake: Wake, done: Callable[[dict[Path, bool]], bool]
) -> dict[Path, bool]:
    """Notices (closed or not) gathered until `done` holds for them; fails after 30 s of quiet."""
    notices: dict[Path, bool] = {}
    while not done(notices):
        assert wake.wait(timeout=30), f"no file event; so far {notices}"
        for path, closed in events.drain().items():
            notices[path] = notices.get(path, False) or closed
    return notices


def test_a_closed_image_is_reported_and_wakes_the_loop(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    image = root.resolve() / "a.png"
    notices: dict[Path, bool] = {}
    with Wake() as wake, EventSource(Inbox(root), wake) as events:
        (root / "notes.txt").write_bytes(b"not an image")
        image.write_bytes(b"x")
        notices = collect_until(events, wake, lambda seen: seen.get(image, False))
    assert set(notices) == {image}


def test_reading_and_removing_files_raises_no_notice(tmp_path: Path) -> None:
    """The daemon's own work on inbox files (reading them, moving them out) must not feed the
    loop: only the arrival that follows the reads and the unlink is reported."""
    root = tmp_path / "inbox"
    root.mkdir()
    old, gone, marker = (root.resolve() / name for name in ("old.png", "gone.png", "z.png"))
    old.write_bytes(b"x")
    gone.write_bytes(b"y")
    with Wake() as wake, EventSource(Inbox(root), wake) as events:
        assert old.read_bytes() == b"x"  # open + close without writing
        gone.unlink()
        (tmp_path / "staged.png").write_bytes(b"z")
        (tmp_path / "staged.png").rename(marker)  # a move into the inbox: the last event
        notices = collect_until(events, wake, lambda seen: marker in seen)
    assert set(notices) == {marker}  # events arrive in order: none came for old or gone


def test_a_class_folder_made_after_start_is_watched(tmp_path: Path) -> None:
    """Without --recursive only class folders count: a `cat/` made later is watched, an `other/`
    folder is not; the last write, directly in the inbox, marks the end."""
    root = (tmp_path / "inbox").resolve()
    root.mkdir()
    cat, other, marker = root / "cat" / "a.png", root / "other" / "b.png", root / "z.png"
    with Wake() as wake, EventSource(Inbox(root, label_dirs={"cat", "dog"}), wake) as events:
        cat.parent.mkdir()
        other.parent.mkdir()
        # if the watch on the new folder begins only after this write, the observer's listing
        # of the new folder still reports the file
        cat.write_bytes(b"x")
        notices = collect_until(events, wake, lambda seen: cat in seen)
        other.write_bytes(b"y")
        marker.write_bytes(b"z")
        notices |= collect_until(events, wake, lambda seen: seen.get(marker, False))
    assert set(notices) == {cat, marker}


def test_a_folder_tree_moved_in_is_noticed_with_recursive(tmp_path: Path) -> None:
    """With --recursive a whole tree moved in counts (its files were there before any watch),
    and files written later deep inside it too; the excluded output folder never does."""
    root = (tmp_path / "inbox").resolve()
    out = root / "sorted"
    out.mkdir(parents=True)
    staged = tmp_path / "staged"
    (staged / "deep").mkdir(parents=True)
    (staged / "one.png").write_bytes(b"1")
    (staged / "deep" / "two.png").write_bytes(b"2")
    inbox = Inbox(root, recursive=True, exclude=[out])
    with Wake() as wake, EventSource(inbox, wake) as events:
        os.rename(staged, root / "batch")
        moved = {root / "batch" / "one.png", root / "batch" / "deep" / "two.png"}
        notices = collect_until(events, wake, lambda seen: moved <= set(seen))
        (out / "placed.png").write_bytes(b"mine")  # the daemon's own output: not an arrival
        later = root / "batch" / "deep" / "three.png"
        later.write_bytes(b"3")
        notices |= collect_until(events, wake, lambda seen: seen.get(later, False))
    assert set(notices) == moved | {later}


def _no_inotify_instance_left() -> None:
    raise OSError(errno.EMFILE, "inotify instance limit reached")  # as watchdog's Observer()


@pytest.mark.parametrize("cause", ["no watch", "no inotify instance"])
def test_without_file_events_a_warning_and_nothing_left_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, cause: str
) -> None:
    """The observer cannot start: no watch can be added (here the inbox is gone; in the field
    the inotify watch limit) or no inotify instance is left. The daemon goes on with the rescan
    alone, and no watchdog thread outlives the `with` (the leaked-thread guard checks)."""
    root = tmp_path / "inbox"
    if cause == "no inotify instance":
        root.mkdir()
        monkeypatch.setattr(events_module, "Observer", _no_inotify_instance_left)
    with Wake() as wake, EventSource(Inbox(root), wake) as events:
        if root.is_dir():
            (root / "a.png").write_bytes(b"x")
        assert events.drain() == {} and not wake.wait(timeout=0)
    assert "file events unavailable" in caplog.text


def test_the_wake_rings_once_per_undrained_buffer(tmp_path: Path) -> None:
    """A burst of notices rings the wake once (a pipe write per file was a burst's cost); the
    first notice after a drain rings it again, so no notice waits unannounced."""
    with Wake() as wake:
        events = EventSource(Inbox(tmp_path), wake)
        writes: list[None] = []
        real_ring = wake.ring
        wake.ring = lambda: (writes.append(None), real_ring())[1]  # type: ignore[method-assign]
        for index in range(50):
            events.put(tmp_path / f"{index}.png", closed=False)
        assert len(writes) == 1 and wake.wait(timeout=0)
        assert len(events.drain()) == 50
        events.put(tmp_path / "late.png", closed=True)
        assert len(writes) == 2 and wake.wait(timeout=0)
        assert events.drain() == {tmp_path / "late.png": True}
