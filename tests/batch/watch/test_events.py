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
