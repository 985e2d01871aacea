"""The daemon's wake-up call and its stop request, which SIGTERM/SIGINT run as a signal handler.

A handler runs in the main thread between two bytecodes, so it must not need anything the code it
interrupts may hold. A CI run once saw the daemon ignore SIGTERM for good: the handler called
`threading.Event.set` while the main loop was inside that event's `wait`, holding its lock. The
test below fires the stop request at every line the daemon's wait executes, as a signal could.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from batch.watch.daemon import WatchDaemon
from batch.watch.settings import WatchSettings
from batch.watch.wake import Wake


def test_a_ring_before_the_wait_is_not_lost_and_is_consumed_by_it() -> None:
    with Wake() as wake:
        wake.ring()
        wake.ring()
        assert wake.wait(timeout=30) is True
        assert wake.wait(timeout=0) is False


def test_a_wait_without_a_ring_returns_false_at_its_timeout() -> None:
    with Wake() as wake:
        assert wake.wait(timeout=0.01) is False


def test_a_ring_from_another_thread_ends_the_wait() -> None:
    with Wake() as wake:
        ringer = threading.Timer(0.05, wake.ring)
        ringer.start()
        assert wake.wait(timeout=60) is True
        ringer.join()


def test_rings_beyond_the_pipe_capacity_never_block() -> None:
    with Wake() as wake:
        for _ in range(200_000):  # a pipe holds 64 KiB on Linux
            wake.ring()
        assert wake.wait(timeout=0) is True
        assert wake.wait(timeout=0) is False


def test_a_ring_after_close_does_nothing() -> None:
    wake = Wake()
    wake.close()
    wake.ring()
    wake.close()


def _daemon(tmp_path: Path) -> WatchDaemon:
    return WatchDaemon(WatchSettings(inbox=tmp_path / "inbox", out=tmp_path / "out", model="m"))


def _sleep_with_a_stop_at_line(daemon: WatchDaemon, line: int) -> tuple[bool, int]:
    """Run the daemon's interruptible sleep in a thread whose tracer calls `request_stop` at the
    `line`-th line event (as a signal handler would run there). Returns (finished, lines seen)."""
    seen = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal seen
        if event == "line":
            seen += 1
            if seen == line:
                daemon.request_stop()
        return tracer

    def sleep() -> None:
        sys.settrace(tracer)
        try:
            daemon._sleep(0.2)
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=sleep, daemon=True)
    thread.start()
    thread.join(timeout=20)
    return not thread.is_alive(), seen


def test_a_stop_request_at_any_point_of_the_wait_ends_it_without_deadlock(tmp_path: Path) -> None:
    line = 1
    while True:
        daemon = _daemon(tmp_path)
        finished, seen = _sleep_with_a_stop_at_line(daemon, line)
        assert finished, f"request_stop at line event {line} of the wait never returned"
        daemon._wake.close()  # run() closes it; this daemon never ran
        if seen < line:  # the wait ended before the request: every point has been tried
            break
        assert daemon._stopping
        line += 1
    assert line > 5, "the wait ran too few lines for the test to mean anything"


def test_a_stop_request_cuts_the_backoff_sleep_short(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    threading.Timer(0.05, daemon.request_stop).start()
    sleeper = threading.Thread(target=daemon._sleep, args=(3600.0,), daemon=True)
    sleeper.start()
    sleeper.join(timeout=60)
    assert not sleeper.is_alive()
    daemon._wake.close()
