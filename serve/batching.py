"""Dynamic batching for one loaded model version: queued requests -> one model call.

Requests (already preprocessed to float32 [n, H, W, C]) wait in a bounded queue on the event
loop. Whenever the model is idle and something is queued, everything queued (up to
`max_batch_size` images) goes to the model at once, in the batcher's own worker thread; results
come back in one callback on the loop, which starts the next batch straight away. So a lone
request on an idle model costs one thread hop and no timer, and under load batches grow by
themselves while the model is busy. A model call measured to take less than `inline` seconds at
that batch size runs on the loop itself: for a tiny model the thread hop costs more than the
call (a LiteRT MNIST call at batch 1 is ~0.05 ms). The one wait: while other requests are still
*arriving* (they hold this version and are decoding, see `arriving()`), an idle model waits up to
`timeout` for them, and no longer than the last of them takes.

    batcher = Batcher(classifier.predict, max_batch_size=32, timeout=0.002, queue_bound=256)
    batcher.start()
    probs = await batcher.predict(inputs)
    await batcher.close()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import numpy as np

from serve.errors import ResourceExhausted
from serve.thread_pool import WorkerPool

log = logging.getLogger(__name__)
Predict = Callable[[np.ndarray], np.ndarray]
Outcome = tuple[np.ndarray | None, BaseException | None]  # a model call's (result, error)
BatchObserver = Callable[[int, int], None]  # (images in the batch, requests still queued)


class Batcher:
    """Queue -> batches of at most `max_batch_size` images -> one `predict` call each.

    A request larger than `max_batch_size` is run alone, never split. If the model call raises,
    every request of that batch gets the exception. A request whose caller gave up (deadline,
    cancellation) before its batch formed never reaches the model.
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
        inline: float = 0.0003,
    ) -> None:
        self._predict = predict
        self.inline = inline
        self._cost: dict[int, float] = {}  # batch size -> recent seconds per model call
        self.max_batch_size = max_batch_size
        self.timeout = timeout
        self.queue_bound = queue_bound
        self.name = name
        self._observe = observe
        self._queue: collections.deque[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = (
            collections.deque()
        )
        self._arriving = 0
        self._busy = False  # a model call is running
        self._soon = False  # a dispatch is scheduled for the next loop turn
        self._wait: asyncio.TimerHandle | None = None  # armed while waiting for arrivals
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: WorkerPool | None = None
        self._closed = False
        self.batches = 0  # model calls made (a counter tests and benchmarks read)

    def start(self) -> None:
        """Bind to the running loop and start the worker thread."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._worker = WorkerPool(self.name, 1)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def arriving_count(self) -> int:
        """Requests marked as on their way (still being decoded)."""
        return self._arriving

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (being decoded), so a forming batch may wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            if not self._arriving and self._wait is not None and self._loop is not None:
                self._loop.call_soon(self._dispatch)  # the last one is in (or failed)

    async def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities for `inputs` (float32 [n, H, W, C]) from a batched model call."""
        if self._loop is None or self._closed:
            raise RuntimeError(f"{self.name} is not running")
        if len(self._queue) >= self.queue_bound:
            raise ResourceExhausted(
                f"{self.name}: {self.queue_bound} requests already queued; retry later"
            )
        future: asyncio.Future[np.ndarray] = self._loop.create_future()
        self._queue.append((inputs, future))
        if not self._busy and not self._soon:
            # One loop turn later: requests the loop is handling in this turn join the batch.
            self._soon = True
            self._loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        """Start a model call on what is queued, unless one runs or arrivals are worth a wait."""
        self._soon = False
        if self._busy or self._closed:
            return
        queue_ = self._queue
        while queue_ and queue_[0][1].done():  # the caller gave up: never run it
            queue_.popleft()
        if not queue_:
            return
        if self._arriving and self._wait is None and self.timeout > 0:
            size = sum(len(inputs) for inputs, _ in queue_)
            if size < self.max_batch_size:
                assert self._loop is not None
                self._wait = self._loop.call_later(self.timeout, self._dispatch)
                return
        if self._wait is not None:
            self._wait.cancel()
            self._wait = None
        batch = [queue_.popleft()]
        size = len(batch[0][0])
        while queue_ and size < self.max_batch_size:
            inputs, future = queue_[0]
            if future.done():
                queue_.popleft()
                continue
            if size + len(inputs) > self.max_batch_size:
                break
            batch.append(queue_.popleft())
            size += len(inputs)
        arrays = batch[0][0] if len(batch) == 1 else np.concatenate([i for i, _ in batch])
        if self._observe is not None:
            self._observe(len(arrays), len(queue_))
        self._busy = True
        size = len(arrays)
        if self._cost.get(size, 1.0) < self.inline:
            probs, error = self._timed(arrays)
            self._done(batch, probs, error)
            return
        assert self._worker is not None and self._loop is not None

        def finished(outcome: Outcome | None, error: BaseException | None) -> None:
            self._done(batch, *(outcome or (None, error)))

        self._worker.submit(self._loop, self._timed, arrays, finished)

    def _timed(self, arrays: np.ndarray) -> Outcome:
        """The model call and its outcome; its duration feeds the inline decision."""
        started = time.perf_counter()
        try:
            probs = self._predict(arrays)
        except Exception as exc:
            return None, exc
        seconds = time.perf_counter() - started
        size = len(arrays)
        self._cost[size] = 0.8 * self._cost.get(size, seconds) + 0.2 * seconds
        return probs, None

    def _done(
        self,
        batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]],
        probs: np.ndarray | None,
        error: BaseException | None,
    ) -> None:
        self._busy = False
        if error is not None:
            log.error("%s: model call on a batch of %d failed", self.name, len(batch),
                      exc_info=error)  # fmt: skip
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            self.batches += 1
            start = 0
            for inputs, future in batch:
                end = start + len(inputs)
                if not future.done():
                    future.set_result(probs[start:end])  # type: ignore[index]
                start = end
        if self._queue:
            self._dispatch()

    async def close(self) -> None:
        """Stop taking batches, fail what is still queued, and stop the worker thread."""
        self._closed = True
        if self._wait is not None:
            self._wait.cancel()
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(ResourceExhausted(f"{self.name} was shut down"))
        if self._worker is not None:
            await asyncio.to_thread(self._worker.stop)
