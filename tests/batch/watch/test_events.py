"""File-system events: an image written and closed in the inbox wakes the loop and is reported
as closed; other files are not reported; the observer thread is gone after the `with`."""

from __future__ import annotations

import threading
from pathlib import Path

from batch.watch.events import EventSource
from batch.watch.inbox import Inbox


def test_a_closed_image_is_reported_and_wakes_the_loop(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    image = root.resolve() / "a.png"
    wake = threading.Event()
    notices: dict[Path, bool] = {}
    with EventSource(Inbox(root), wake) as events:
        (root / "notes.txt").write_bytes(b"not an image")
        image.write_bytes(b"x")
        while not notices.get(image):  # until the close-after-write notice has come
            assert wake.wait(timeout=30), f"no file event; so far {notices}"
            wake.clear()
            for path, closed in events.drain().items():
                notices[path] = notices.get(path, False) or closed
    assert set(notices) == {image}


def test_reading_and_removing_files_raises_no_notice(tmp_path: Path) -> None:
    """The daemon's own work on inbox files (reading them, moving them out) must not feed the
    loop: only the arrival that follows the reads and the unlink is reported."""
    root = tmp_path / "inbox"
    root.mkdir()
    old, gone, marker = (root.resolve() / name for name in ("old.png", "gone.png", "z.png"))
    old.write_bytes(b"x")
    gone.write_bytes(b"y")
    wake = threading.Event()
    notices: dict[Path, bool] = {}
    with EventSource(Inbox(root), wake) as events:
        assert old.read_bytes() == b"x"  # open + close without writing
        gone.unlink()
        (tmp_path / "staged.png").write_bytes(b"z")
        (tmp_path / "staged.png").rename(marker)  # a move into the inbox: the last event
        while marker not in notices:
            assert wake.wait(timeout=30), f"no file event; so far {notices}"
            wake.clear()
            notices.update(events.drain())
    assert set(notices) == {marker}  # events arrive in order: none came for old or gone
