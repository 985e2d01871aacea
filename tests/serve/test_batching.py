"""Dynamic batching: the Batcher on its own (a plain function as the model), then a real server."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import numpy as np
import pytest

from serve.batching import Batcher
from serve.client import Client
from serve.errors import ResourceExhausted
from tests.images import encode, gray_pixels
from tests.serve.conftest import ServerThread


class Recorder:
    """A deterministic "model": row sums; records every batch. While `gate` is clear each call
    waits for it, so a test can make requests queue behind a running model call."""

    def __init__(self, fail_on: int | None = None, gate_open: bool = True) -> None:
        self.fail_on = fail_on
        self.gate = threading.Event()
        if gate_open:
            self.gate.set()
        self.calling = threading.Event()
        self.batches: list[np.ndarray] = []
        self.threads: list[str] = []  # the thread each call ran in

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    def values(self) -> list[float]:
        """The first pixel of every input row the model received, in order."""
        return [float(row.flat[0]) for batch in self.batches for row in batch]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        self.threads.append(threading.current_thread().name)
        self.calling.set()
        assert self.gate.wait(60), "the test never opened the gate"
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise ValueError("model exploded")
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)


def inputs(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 2, 2, 1), value, np.float32)


def run(coroutine):
    """Run a test's coroutine; an exception raised in any loop callback (the batcher's dispatch
    or its result callback) fails the test, even where the requests still end up answered."""
    failures: list[dict[str, object]] = []

    async def guarded():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: failures.append(context))
        return await coroutine

    result = asyncio.run(guarded())
    assert not failures, failures
    return result


async def model_called(model: Recorder) -> None:
    """Wait (without blocking the loop) until the model is inside a call."""
    assert await asyncio.to_thread(model.calling.wait, 60), "the model was never called"


async def settle() -> None:
    """Let every ready task and callback run (no clock involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


def one_at_a_time(
    model: Recorder, requests: list[tuple[float, int]], *, inline: float = 0.5
) -> list[object]:
    """Send each (value, images) request after the previous one's answer through a batcher
    named "tiny" with `inline` seconds; the answers (or errors), in order."""

    async def main() -> list[object]:
        batcher = Batcher(model, max_batch_size=8, timeout=0.0, inline=inline, name="tiny")
        batcher.start()
        try:
            return [
                (await asyncio.gather(batcher.predict(inputs(v, n)), return_exceptions=True))[0]
                for v, n in requests
            ]
        finally:
            await batcher.close()

    return run(main())


def test_requests_queued_behind_a_model_call_share_the_next_calls() -> None:
    model = Recorder(gate_open=False)

    async def main() -> list[np.ndarray]:
        batcher = Batcher(model, max_batch_size=8, timeout=0.0, queue_bound=100)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.predict(inputs(0)))
            await model_called(model)
            rest = [asyncio.ensure_future(batcher.predict(inputs(i))) for i in range(1, 30)]
            await settle()
            model.gate.set()
            answers = await asyncio.gather(first, *rest)
            assert batcher.batches == 5  # model calls made
            return answers
        finally:
            await batcher.close()

    results = run(main())
    assert [float(r[0, 0]) for r in results] == [i * 4.0 for i in range(30)]
    assert model.sizes == [1, 8, 8, 8, 5]
    assert model.values() == [float(i) for i in range(30)]


def test_a_lone_request_does_not_wait_for_the_timeout() -> None:
    model = Recorder()

    async def main() -> np.ndarray:
        batcher = Batcher(model, max_batch_size=8, timeout=3600.0)
        batcher.start()
        try:  # waiting for the hour-long timeout would hang here, and fail at the 60 s bound
            return await asyncio.wait_for(batcher.predict(inputs(1)), 60)
        finally:
            await batcher.close()

    assert float(run(main())[0, 0]) == 4.0
    assert model.sizes == [1]


@pytest.mark.parametrize("timeout", [3600.0, 1.0])
def test_arriving_requests_are_waited_for(timeout: float) -> None:
    model = Recorder()

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=8, timeout=timeout)
        batcher.start()
        entered, decoded = asyncio.Event(), asyncio.Event()

        async def late() -> np.ndarray:
            with batcher.arriving():  # holds the version and is "decoding" until told
                entered.set()
                await decoded.wait()
            return await batcher.predict(inputs(2))

        late_task = asyncio.ensure_future(late())
        await entered.wait()
        first = asyncio.ensure_future(batcher.predict(inputs(1)))
        await settle()  # a batcher that did not wait would have called the model by now
        assert model.sizes == []
        decoded.set()
        assert float((await first)[0, 0]) == 4.0 and float((await late_task)[0, 0]) == 8.0
        await batcher.close()

    run(main())
    assert model.sizes == [2]


def test_oversize_request_runs_alone_and_order_is_kept() -> None:
    model = Recorder(gate_open=False)

    async def main() -> list[np.ndarray]:
        batcher = Batcher(model, max_batch_size=4, timeout=0.0)
        batcher.start()
        try:
            held = asyncio.ensure_future(batcher.predict(inputs(0, 1)))
            await model_called(model)
            queued = [
                asyncio.ensure_future(batcher.predict(inputs(value, n)))
                for value, n in ((1, 3), (2, 10), (3, 2))
            ]
            await settle()
            model.gate.set()
            return await asyncio.gather(held, *queued)
        finally:
            await batcher.close()

    _, small, big, last = run(main())
    assert small.shape == (3, 1) and big.shape == (10, 1) and last.shape == (2, 1)
    assert float(small[2, 0]) == 4.0 and float(big[9, 0]) == 8.0 and float(last[1, 0]) == 12.0
    assert model.sizes == [1, 3, 10, 2]


def test_full_queue_is_resource_exhausted() -> None:
    model = Recorder(gate_open=False)

    async def main() -> list[object]:
        batcher = Batcher(model, max_batch_size=1, timeout=0.0, queue_bound=2)
        batcher.start()
        try:
            held = asyncio.ensure_future(batcher.predict(inputs(0)))
            await model_called(model)
            more = [asyncio.ensure_future(batcher.predict(inputs(i))) for i in range(1, 6)]
            await settle()
            model.gate.set()
            return await asyncio.gather(held, *more, return_exceptions=True)
        finally:
            await batcher.close()

    outcomes = run(main())
    assert [isinstance(o, np.ndarray) for o in outcomes] == [True] * 3 + [False] * 3
    assert all(isinstance(o, ResourceExhausted) for o in outcomes[3:])
    assert str(outcomes[3]) == "batcher: 2 requests already queued; retry later"
    assert model.values() == [0.0, 1.0, 2.0]


def test_model_error_fails_its_batch_only(caplog: pytest.LogCaptureFixture) -> None:
    model = Recorder(fail_on=2, gate_open=False)

    async def main() -> tuple[list[object], np.ndarray]:
        batcher = Batcher(model, max_batch_size=4, timeout=0.0)
        batcher.start()
        try:
            held = asyncio.ensure_future(batcher.predict(inputs(9)))
            await model_called(model)
            doomed = [asyncio.ensure_future(batcher.predict(inputs(i))) for i in range(3)]
            await settle()
            model.gate.set()
            first = await asyncio.gather(held, *doomed, return_exceptions=True)
            after = await batcher.predict(inputs(5))
            assert batcher.batches == 2  # the failed call is not counted
            return first, after
        finally:
            await batcher.close()

    first, after = run(main())
    assert float(first[0][0, 0]) == 36.0  # type: ignore[index]
    assert all(isinstance(o, ValueError) for o in first[1:])
    assert float(after[0, 0]) == 20.0
    assert model.sizes == [1, 3, 1]
    (record,) = [r for r in caplog.records if r.name == "serve.batching"]
    assert record.levelname == "ERROR"
    assert record.getMessage() == "batcher: model call on a batch of 3 failed"
    assert record.exc_info is not None and record.exc_info[1] is first[1]


def test_cancelled_request_is_skipped() -> None:
    model = Recorder(gate_open=False)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=1, timeout=0.0)
        batcher.start()
        blocker = asyncio.ensure_future(batcher.predict(inputs(1)))
        await model_called(model)
        doomed = asyncio.ensure_future(batcher.predict(inputs(2)))
        await settle()
        doomed.cancel()
        await settle()
        model.gate.set()
        await blocker
        assert float((await batcher.predict(inputs(3)))[0, 0]) == 12.0
        await batcher.close()

    run(main())
    assert model.values() == [1.0, 3.0]


def test_a_call_measured_cheap_runs_on_the_loop_and_an_expensive_one_in_the_worker() -> None:
    """The first call at a batch size goes to the worker thread (nothing measured yet); once a
    size is measured under `inline` seconds (here half a second: the recorder takes microseconds)
    its calls run on the loop, other sizes still not."""
    model = Recorder()
    answers = one_at_a_time(model, [(1, 1), (1, 1), (1, 1), (1, 2)])
    loop_thread = threading.current_thread().name  # asyncio.run's loop runs in this thread
    assert [len(a) for a in answers] == [1, 1, 1, 2]
    assert model.sizes == [1, 1, 1, 2]
    assert model.threads[0].startswith("tiny") and model.threads[3].startswith("tiny")
    assert model.threads[1:3] == [loop_thread, loop_thread]

    never = Recorder()
    one_at_a_time(never, [(1, 1)] * 3, inline=0.0)  # no call is ever cheap enough
    assert len(never.threads) == 3 and all(t.startswith("tiny") for t in never.threads)


def test_the_observer_sees_each_batch_and_what_stays_queued() -> None:
    model = Recorder(gate_open=False)
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        batcher = Batcher(
            model, max_batch_size=4, timeout=0.0, observe=lambda n, queued: seen.append((n, queued))
        )
        batcher.start()
        try:
            held = asyncio.ensure_future(batcher.predict(inputs(0, 2)))
            await model_called(model)
            rest = [asyncio.ensure_future(batcher.predict(inputs(i, 3))) for i in range(1, 4)]
            await settle()
            assert batcher.queue_depth == 3
            model.gate.set()
            await asyncio.gather(held, *rest)
            assert batcher.queue_depth == 0
        finally:
            await batcher.close()

    run(main())
    assert seen == [(2, 0), (3, 2), (3, 1), (3, 0)]


def test_arriving_is_counted_until_the_request_is_in() -> None:
    async def main() -> None:
        batcher = Batcher(Recorder(), timeout=0.0)
        batcher.start()
        try:
            assert batcher.arriving_count == 0
            with batcher.arriving(), batcher.arriving():
                assert batcher.arriving_count == 2
            assert batcher.arriving_count == 0
            with pytest.raises(ValueError), batcher.arriving():  # a decode that failed
                raise ValueError("not an image")
            assert batcher.arriving_count == 0
        finally:
            await batcher.close()

    run(main())


def test_close_fails_what_is_queued_and_refuses_new_requests() -> None:
    model = Recorder(gate_open=False)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=1, timeout=0.0, name="mnist-v1")
        with pytest.raises(RuntimeError, match=r"^mnist-v1 is not running$"):
            await batcher.predict(inputs(1))  # not started
        batcher.start()
        held = asyncio.ensure_future(batcher.predict(inputs(1)))
        await model_called(model)
        queued = asyncio.ensure_future(batcher.predict(inputs(2)))
        await settle()
        closing = asyncio.ensure_future(batcher.close())
        await settle()
        with pytest.raises(ResourceExhausted, match=r"^mnist-v1 was shut down$"):
            await queued
        model.gate.set()  # the call in progress still finishes
        assert float((await held)[0, 0]) == 4.0
        await closing
        with pytest.raises(RuntimeError, match=r"^mnist-v1 is not running$"):
            await batcher.predict(inputs(3))

    run(main())
    assert model.values() == [1.0]


def test_a_request_cancelled_during_a_failing_call_stays_cancelled() -> None:
    """The model fails a batch one of whose callers gave up while it ran: the others get the
    error, the cancelled one is left alone (no error raised in the loop's callback)."""
    model = Recorder(fail_on=1, gate_open=False)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=8, timeout=0.0)
        batcher.start()
        try:
            gave_up, waiting = (asyncio.ensure_future(batcher.predict(inputs(v))) for v in (1, 2))
            await model_called(model)
            gave_up.cancel()
            await settle()
            model.gate.set()
            with pytest.raises(ValueError, match="model exploded"):
                await waiting
            assert gave_up.cancelled()
        finally:
            await batcher.close()

    run(main())
    assert model.sizes == [2]


def test_close_skips_a_queued_request_whose_caller_gave_up() -> None:
    model = Recorder(gate_open=False)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=1, timeout=0.0, name="mnist-v1")
        batcher.start()
        held = asyncio.ensure_future(batcher.predict(inputs(1)))
        await model_called(model)
        gave_up, queued = (asyncio.ensure_future(batcher.predict(inputs(v))) for v in (2, 3))
        await settle()
        gave_up.cancel()
        await settle()
        closing = asyncio.ensure_future(batcher.close())
        await settle()
        assert queued.done() and not closing.done()  # close waits for the call in progress
        with pytest.raises(ResourceExhausted, match=r"^mnist-v1 was shut down$"):
            await queued
        assert gave_up.cancelled()
        model.gate.set()
        assert float((await held)[0, 0]) == 4.0
        await closing

    run(main())
    assert model.values() == [1.0]


class TimerLoop(asyncio.SelectorEventLoop):
    """An event loop that keeps every timer it arms, for tests to check they were cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.timers: list[asyncio.TimerHandle] = []

    def call_later(self, delay, callback, *args, context=None):  # type: ignore[no-untyped-def]
        timer = super().call_later(delay, callback, *args, context=context)
        self.timers.append(timer)
        return timer


def test_close_while_waiting_for_arrivals_cancels_the_wait() -> None:
    """A batch waiting (up to an hour) for a request still decoding is failed by close, and the
    wait's timer is cancelled: a closed batcher leaves nothing armed on the loop."""

    async def main() -> list[asyncio.TimerHandle]:
        batcher = Batcher(Recorder(), max_batch_size=8, timeout=3600.0, name="mnist-v1")
        batcher.start()
        with batcher.arriving():
            waiting = asyncio.ensure_future(batcher.predict(inputs(1)))
            await settle()
            await batcher.close()
        with pytest.raises(ResourceExhausted, match=r"^mnist-v1 was shut down$"):
            await waiting
        loop = asyncio.get_running_loop()
        assert isinstance(loop, TimerLoop)
        return loop.timers

    with asyncio.Runner(loop_factory=TimerLoop) as runner:
        timers = runner.run(main())
    assert [timer.cancelled() for timer in timers] == [True]


def test_start_twice_keeps_one_worker_thread_and_close_before_start_is_a_no_op() -> None:
    def workers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("twice-")]

    async def main() -> None:
        await Batcher(Recorder(), name="never").close()  # never started: nothing to stop
        batcher = Batcher(Recorder(), name="twice")
        batcher.start()
        batcher.start()
        try:
            assert workers() == ["twice-0"]
            assert float((await batcher.predict(inputs(1)))[0, 0]) == 4.0
        finally:
            await batcher.close()
        assert workers() == []

    run(main())


def test_defaults_are_the_documented_ones() -> None:
    batcher = Batcher(Recorder())
    assert (batcher.max_batch_size, batcher.timeout, batcher.queue_bound) == (32, 0.002, 256)
    assert (batcher.name, batcher.inline, batcher.batches) == ("batcher", 0.0003, 0)


def test_a_full_batch_does_not_wait_for_arrivals() -> None:
    """Queued requests that already fill `max_batch_size` go to the model at once, though
    another request is still arriving (it could not join the batch anyway)."""
    model = Recorder()

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=4, timeout=3600.0)
        batcher.start()
        try:
            with batcher.arriving():
                results = await asyncio.wait_for(
                    asyncio.gather(batcher.predict(inputs(1, 3)), batcher.predict(inputs(2))), 60
                )
            assert [len(r) for r in results] == [3, 1]
        finally:
            await batcher.close()

    run(main())
    assert model.sizes == [4]


def test_an_arrival_that_never_comes_delays_the_batch_by_the_timeout_only() -> None:
    """A request still decoding when the timeout ends is not waited for any longer: the timer
    starts the batch (the clock is not measured, only that the answer comes)."""
    model = Recorder()

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=8, timeout=0.01)
        batcher.start()
        try:
            with batcher.arriving():  # held until the first request has its answer
                answer = await asyncio.wait_for(batcher.predict(inputs(3)), 60)
            assert float(answer[0, 0]) == 12.0
        finally:
            await batcher.close()

    run(main())
    assert model.sizes == [1]


def test_a_cancelled_request_in_the_middle_leaves_room_for_the_next() -> None:
    model = Recorder(gate_open=False)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=4, timeout=0.0)
        batcher.start()
        try:
            held = asyncio.ensure_future(batcher.predict(inputs(0)))
            await model_called(model)
            first, doomed, last = (
                asyncio.ensure_future(batcher.predict(inputs(v))) for v in (1, 2, 3)
            )
            await settle()
            doomed.cancel()
            await settle()
            model.gate.set()
            await asyncio.gather(held, first, last)
        finally:
            await batcher.close()

    run(main())
    assert model.sizes == [1, 2]
    assert model.values() == [0.0, 1.0, 3.0]


def test_a_model_error_on_the_loop_reaches_the_caller() -> None:
    """Once calls run on the loop (measured cheap), a failing one still fails its request."""
    model = Recorder(fail_on=3)
    outcomes = one_at_a_time(model, [(v, 1) for v in (1, 2, 3, 4)])
    assert [type(o).__name__ for o in outcomes] == ["ndarray", "ndarray", "ValueError", "ndarray"]
    assert model.threads[2] == threading.current_thread().name  # the failing call was inline


def test_a_steady_cheap_model_stays_on_the_loop() -> None:
    """Every call after the first at one size runs on the loop: the recent cost of a model that
    takes microseconds stays far under `inline` however many calls it makes."""
    model = Recorder()
    one_at_a_time(model, [(1, 1)] * 40)
    assert model.threads[0].startswith("tiny")
    assert set(model.threads[1:]) == {threading.current_thread().name}


class SlowOnce(Recorder):
    """A cheap model whose second call takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if len(self.batches) == 1:
            time.sleep(self.seconds)
        return super().__call__(batch)


@pytest.mark.parametrize(("seconds", "third_call_inline"), [(1.0, True), (3.0, False)])
def test_the_cost_is_a_moving_average_of_recent_calls(
    seconds: float, third_call_inline: bool
) -> None:
    """The cost is 0.8 old + 0.2 new: one call of a second after cheap ones puts it near
    0.2 s, under `inline` = 0.5 s, so the next call stays on the loop; one of three seconds
    puts it near 0.6 s and the next call goes to the worker thread."""
    model = SlowOnce(seconds)
    one_at_a_time(model, [(1, 1)] * 3)
    loop_thread = threading.current_thread().name
    assert model.threads[0].startswith("tiny") and model.threads[1] == loop_thread
    assert (model.threads[2] == loop_thread) is third_call_inline


def _histogram(text: str, name: str) -> tuple[float, float]:
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum{{"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count{{"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


@pytest.mark.slow
def test_server_batches_concurrent_requests(server: ServerThread) -> None:
    rng = np.random.default_rng(5)
    images = [encode(gray_pixels(("dark", "light")[i % 2], rng)) for i in range(16)]
    with Client(server.target) as client:
        unbatched = [client.classify("gray", [png]).predictions[0].probabilities for png in images]
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with Client(server.target) as client:
                results[index] = [
                    client.classify("gray", [images[index]]).predictions[0].probabilities
                    for _ in range(8)
                ]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    for index, answers in results.items():
        for probabilities in answers:
            np.testing.assert_allclose(probabilities, unbatched[index], atol=1e-6)
    assert server.app is not None and server.app.metrics_port
    url = f"http://127.0.0.1:{server.app.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    images_total, batches = _histogram(text, "clfserve_batch_size")
    assert images_total == 16 + 16 * 8
    assert batches < images_total, "no request was ever batched with another"
    assert 'clfserve_requests_total{code="OK",model="gray",version="1"} 144.0' in text
    assert 'clfserve_loaded_versions{model="gray"} 1.0' in text
