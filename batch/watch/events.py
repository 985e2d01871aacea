"""File-system events from the inbox: watchdog's observer feeding a buffer the main loop drains.

with EventSource(inbox, wake) as events:   # wake: set on every notice
    for path, closed in events.drain().items(): settler.note(path, closed=closed)
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import TracebackType

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from batch.watch.inbox import Inbox
from batch.watch.wake import Wake

log = logging.getLogger(__name__)

# The events a notice comes from. Watchdog narrows the kernel's inotify mask to them, so the
# daemon's own reads (open, close without write) and moves out of the inbox (delete) raise no
# events at all: during a burst those were most of the observer threads' work, competing with
# the main loop for the GIL.
_WANTED = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: Inbox, sink: EventSource) -> None:
        self._inbox = inbox
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in ("created", "modified", "moved", "closed"):
            return
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        path = Path(os.fsdecode(raw))
        if self._inbox.accepts(path):
            self._sink.put(path, closed=event.event_type == "closed")


class EventSource:
    """Watchdog's observer feeding (path, closed) notices into a thread-safe buffer.

    `wake` is rung on every notice so the main loop can sleep until something happens.
    If the observer cannot start (inotify limits, an exotic file system) the rescan alone
    carries on, and a warning says so.
    """

    def __init__(self, inbox: Inbox, wake: Wake) -> None:
        self._inbox = inbox
        self._wake = wake
        self._lock = threading.Lock()
        self._notices: dict[Path, bool] = {}
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def put(self, path: Path, *, closed: bool) -> None:
        with self._lock:
            first = not self._notices
            self._notices[path] = self._notices.get(path, False) or closed
        if first:  # later notices join the undrained buffer the ring already announced
            self._wake.ring()

    def drain(self) -> dict[Path, bool]:
        with self._lock:
            notices, self._notices = self._notices, {}
        return notices

    def __enter__(self) -> EventSource:
        observer = None
        try:
            observer = Observer()  # fails when inotify instances are used up (EMFILE)
            observer.schedule(
                _Handler(self._inbox, self),
                str(self._inbox.root),
                recursive=True,
                event_filter=_WANTED,
            )
            observer.start()  # fails when inotify watches are used up (ENOSPC)
        except OSError as exc:
            if observer is not None:
                observer.stop()  # ends the inotify reader thread `Observer()` started
            log.warning("file events unavailable (%s); relying on the periodic rescan", exc)
            return self
        self._observer = observer
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
