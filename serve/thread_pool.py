"""Daemon threads that run blocking calls for the event loop and hand each result back to it.

The batcher runs its model calls on one (in order); the request path decodes images on a few.

    pool = WorkerPool("decode", 2)
    result = await pool.run(function, argument)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")
Done = Callable[[Any, BaseException | None], None]  # (result, error), called on the loop


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class WorkerPool:
    """`size` daemon threads running blocking calls for the event loop (a stuck call never
    blocks interpreter exit; `stop()` still joins them). `size=1` runs calls in order."""

    def __init__(self, name: str, size: int = 1) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, loop: asyncio.AbstractEventLoop, function: Callable[[Any], R], argument: Any,
        done: Done,
    ) -> None:  # fmt: skip
        """Run `function(argument)` in a thread, then `done(result, error)` on `loop`."""
        self._jobs.put((loop, function, argument, done))

    def run(self, function: Callable[[Any], R], argument: Any) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._jobs.put((loop, function, argument, lambda r, e: _settle(future, r, e)))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, function, argument, done = job
            result, error = None, None
            try:
                result = function(argument)
            except BaseException as exc:  # handed to the loop
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                loop.call_soon_threadsafe(done, result, error)

    def stop(self, timeout: float = 30.0) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
