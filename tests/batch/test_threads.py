"""The leak guard of tests/conftest.py: it reports a daemon thread left running."""

from __future__ import annotations

import threading

from tests.conftest import leaked_threads


def test_a_leaked_daemon_thread_is_reported_and_a_finished_one_is_not() -> None:
    before = set(threading.enumerate())
    release = threading.Event()
    leaker = threading.Thread(target=release.wait, name="leaker", daemon=True)
    leaker.start()
    try:
        assert leaked_threads(before, daemons=True, wait=0.05) == ["leaker"]
        assert leaked_threads(before, daemons=False, wait=0.05) == []
    finally:
        release.set()
        leaker.join()
    assert leaked_threads(before, daemons=True) == []
