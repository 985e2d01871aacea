"""The worker pool hands each result back to the loop; a caller that gave up gets nothing."""

from __future__ import annotations

import asyncio
import threading

from serve.thread_pool import WorkerPool


def test_a_result_arriving_after_the_caller_gave_up_is_dropped() -> None:
    """The caller cancelled while its call ran: the late result is not set on the cancelled
    future (that would raise InvalidStateError in a loop callback), and the pool goes on."""
    started, gate = threading.Event(), threading.Event()

    def slow(value: int) -> int:
        started.set()
        assert gate.wait(60), "the test never opened the gate"
        return value * 2

    async def main() -> list[dict[str, object]]:
        failures: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, c: failures.append(c))
        pool = WorkerPool("pool", 1)
        try:
            gave_up = pool.run(slow, 1)
            assert await asyncio.to_thread(started.wait, 60), "the call never started"
            gave_up.cancel()
            gate.set()
            # One thread runs calls in order: this answer comes after the late one was handed back.
            assert await pool.run(slow, 2) == 4
            assert gave_up.cancelled()
        finally:
            await asyncio.to_thread(pool.stop)
        return failures

    assert asyncio.run(main()) == []
