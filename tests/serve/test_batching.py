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
    """A deterministic "model": row sums, after `delay` s; records every batch size."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        time.sleep(self.delay)
        if self.fail_on is not None and len(self.sizes) == self.fail_on:
            raise ValueError("model exploded")
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)


def inputs(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 2, 2, 1), value, np.float32)


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_model_calls() -> None:
    model = Recorder(delay=0.02)

    async def main() -> list[np.ndarray]:
        batcher = Batcher(model, max_batch_size=8, timeout=0.0, queue_bound=100)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict(inputs(i)) for i in range(30)))
        finally:
            await batcher.close()

    results = run(main())
    assert [float(r[0, 0]) for r in results] == [i * 4.0 for i in range(30)]
    assert sum(model.sizes) == 30
    assert max(model.sizes) == 8 and len(model.sizes) < 30


def test_a_lone_request_does_not_wait_for_the_timeout() -> None:
    model = Recorder()

    async def main() -> float:
        batcher = Batcher(model, max_batch_size=8, timeout=1.0)
        batcher.start()
        started = time.perf_counter()
        await batcher.predict(inputs(1))
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    assert run(main()) < 0.5


def test_arriving_requests_are_waited_for() -> None:
    model = Recorder()

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=8, timeout=0.5)
        batcher.start()

        async def late() -> np.ndarray:
            with batcher.arriving():
                await asyncio.sleep(0.05)  # "decoding"
            return await batcher.predict(inputs(2))

        with batcher.arriving():
            pass
        late_task = asyncio.ensure_future(late())
        await asyncio.sleep(0.01)
        first = await batcher.predict(inputs(1))
        assert float((await late_task)[0, 0]) == 8.0 and float(first[0, 0]) == 4.0
        await batcher.close()

    run(main())
    assert model.sizes == [2]


def test_oversize_request_runs_alone_and_order_is_kept() -> None:
    model = Recorder(delay=0.01)

    async def main() -> list[np.ndarray]:
        batcher = Batcher(model, max_batch_size=4, timeout=0.0)
        batcher.start()
        try:
            return await asyncio.gather(
                batcher.predict(inputs(1, 3)),
                batcher.predict(inputs(2, 10)),
                batcher.predict(inputs(3, 2)),
            )
        finally:
            await batcher.close()

    small, big, last = run(main())
    assert small.shape == (3, 1) and big.shape == (10, 1) and last.shape == (2, 1)
    assert float(big[9, 0]) == 8.0 and float(last[1, 0]) == 12.0
    assert 10 in model.sizes and max(s for s in model.sizes if s != 10) <= 4


def test_full_queue_is_resource_exhausted() -> None:
    model = Recorder(delay=0.2)

    async def main() -> list[object]:
        batcher = Batcher(model, max_batch_size=1, timeout=0.0, queue_bound=2)
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.predict(inputs(i)) for i in range(6)), return_exceptions=True
            )
        finally:
            await batcher.close()

    outcomes = run(main())
    assert any(isinstance(o, ResourceExhausted) for o in outcomes)
    assert any(isinstance(o, np.ndarray) for o in outcomes)


def test_model_error_fails_its_batch_only() -> None:
    model = Recorder(delay=0.02, fail_on=1)

    async def main() -> tuple[list[object], np.ndarray]:
        batcher = Batcher(model, max_batch_size=4, timeout=0.0)
        batcher.start()
        try:
            first = await asyncio.gather(
                *(batcher.predict(inputs(i)) for i in range(3)), return_exceptions=True
            )
            return first, await batcher.predict(inputs(5))
        finally:
            await batcher.close()

    first, after = run(main())
    assert all(isinstance(o, ValueError) for o in first[:1])
    assert float(after[0, 0]) == 20.0


def test_cancelled_request_is_skipped() -> None:
    model = Recorder(delay=0.05)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=1, timeout=0.0)
        batcher.start()
        blocker = asyncio.ensure_future(batcher.predict(inputs(1)))
        await asyncio.sleep(0.01)
        doomed = asyncio.ensure_future(batcher.predict(inputs(2)))
        await asyncio.sleep(0)
        doomed.cancel()
        await blocker
        assert float((await batcher.predict(inputs(3)))[0, 0]) == 12.0
        await batcher.close()

    run(main())
    assert model.sizes == [1, 1]


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
