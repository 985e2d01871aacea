"""A wake-up call that a signal handler may ring: a self-pipe instead of `threading.Event`.

`threading.Event.set` takes the event's lock. A signal handler runs in the main thread between
two bytecodes, possibly while that same thread holds the lock inside `Event.wait`/`clear`, and
would then wait for itself forever. Writing a byte to a non-blocking pipe takes no lock, so
`ring()` is safe from a handler and from any thread.

    wake = Wake()
    wake.ring()            # from a signal handler or a watchdog thread
    wake.wait(timeout=2)   # True: rung since the last wait
"""

from __future__ import annotations

import contextlib
import os
import select


class Wake:
    """Ring from anywhere; `wait` sleeps until rung (or the timeout) and consumes the rings."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def ring(self) -> None:
        """Wake the waiter. Takes no lock; a full pipe already means 'rung'."""
        if self._write < 0:  # closed: a late signal has no one left to wake
            return
        with contextlib.suppress(BlockingIOError):  # a full pipe: rung many times already
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> bool:
        """Sleep until rung or `timeout` seconds pass; True when rung. Clears the rings."""
        readable, _, _ = select.select([self._read], [], [], max(0.0, timeout))
        if not readable:
            return False
        try:
            while os.read(self._read, 4096):  # pragma: no branch - write end open: no EOF
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        """Close the pipe; later rings do nothing (the descriptor is forgotten before it is
        closed, so a handler running in between never writes to a reused number)."""
        write, self._write = self._write, -1
        if write >= 0:
            os.close(write)
            os.close(self._read)

    def __enter__(self) -> Wake:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
