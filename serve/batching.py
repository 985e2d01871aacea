"""Dynamic batching for one loaded model version: queued requests -> one model call.

Requests (already preprocessed to float32 [n, H, W, C]) wait in a bounded queue. One asyncio task
takes everything queued, up to `max_batch_size` images; while more requests are already
*arriving* (acquired a version and are decoding, see `arriving()`) it waits up to `timeout` for
them. The model call runs in the batcher's own worker thread, so while it runs the next batch
fills up: under load batches grow by themselves, and a lone request never waits.

    batcher = Batcher(classifier.predict, max_batch_size=32, timeout=0.002, queue_bound=256)
    batcher.start()
    probs = await batcher.predict(inputs)
    await batcher.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from serve.errors import ResourceExhausted

log = logging.getLogger(__name__)
Predict = Callable[[np.ndarray], np.ndarray]
R = TypeVar("R")
BatchObserver = Callable[[int, int], None]  # (images in the batch, queue depth after taking it)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class WorkerPool:
    """`size` daemon threads running blocking calls for the event loop (a stuck call never
    blocks interpreter exit; `stop()` still joins them). `size=1` runs calls in order.

        pool = WorkerPool("decode", 2)
        result = await pool.run(function, argument)
    """

    def __init__(self, name: str, size: int = 1) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, function: Callable[[Any], R], argument: Any) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._jobs.put((loop, future, function, argument))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, function, argument = job
            result, error = None, None
            try:
                result = function(argument)
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                loop.call_soon_threadsafe(_settle, future, result, error)

    def stop(self, timeout: float = 30.0) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)


@dataclass
class _Pending:
    inputs: np.ndarray
    future: asyncio.Future[np.ndarray] = field(repr=False)


class Batcher:
    """Queue -> batches of at most `max_batch_size` images -> one `predict` call each.

    A request larger than `max_batch_size` is run alone, never split. If the model call raises,
    every request of that batch gets the exception.
    """

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_size: int = 32,
        timeout: float = 0.002,
        queue_bound: int = 256,
        name: str = "batcher",
        observe: BatchObserver | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.timeout = timeout
        self.queue_bound = queue_bound
        self.name = name
        self._observe = observe
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._arriving = 0
        self._carry: _Pending | None = None
        self._task: asyncio.Task[None] | None = None
        self._worker = WorkerPool(name, 1)
        self.batches = 0  # model calls made (a counter tests and benchmarks read)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() + (self._carry is not None)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (being decoded), so a forming batch may wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities for `inputs` (float32 [n, H, W, C]) from a batched model call."""
        if self._task is None or self._task.done():
            raise RuntimeError(f"{self.name} is not running")
        if self._queue.qsize() >= self.queue_bound:
            raise ResourceExhausted(
                f"{self.name}: {self.queue_bound} requests already queued; retry later"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(inputs, future))
        return await future

    async def _next(self, wait: float | None) -> _Pending | None:
        """The next live request: a carried-over one, a queued one, or one within `wait` s."""
        while True:
            if self._carry is not None:
                item, self._carry = self._carry, None
            elif not self._queue.empty():
                item = self._queue.get_nowait()
            elif wait is None:
                item = await self._queue.get()
            elif wait <= 0:
                return None
            else:
                try:
                    item = await asyncio.wait_for(self._queue.get(), wait)
                except TimeoutError:
                    return None
            if not item.future.done():  # skip requests whose caller gave up (deadline)
                return item

    async def _collect(self) -> list[_Pending]:
        first = await self._next(None)
        assert first is not None
        batch, size = [first], len(first.inputs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while size < self.max_batch_size:
            wait = deadline - loop.time() if self._arriving > 0 else 0.0
            item = await self._next(wait)
            if item is None:
                break
            if size + len(item.inputs) > self.max_batch_size:
                self._carry = item
                break
            batch.append(item)
            size += len(item.inputs)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            inputs = (
                batch[0].inputs
                if len(batch) == 1
                else np.concatenate([item.inputs for item in batch])
            )
            if self._observe is not None:
                self._observe(len(inputs), self.queue_depth)
            try:
                probs = await self._worker.run(self._predict, inputs)
            except asyncio.CancelledError:
                for item in batch:
                    if not item.future.done():
                        item.future.cancel()
                raise
            except Exception as exc:
                log.exception("%s: model call on a batch of %d failed", self.name, len(inputs))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            start = 0
            for item in batch:
                end = start + len(item.inputs)
                if not item.future.done():
                    item.future.set_result(probs[start:end])
                start = end

    async def close(self) -> None:
        """Stop taking batches, fail what is still queued, and stop the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        leftovers = [self._carry] if self._carry is not None else []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(ResourceExhausted(f"{self.name} was shut down"))
        await asyncio.to_thread(self._worker.stop)
