"""Fixtures for the server tests: a real clfserve in a background thread on 127.0.0.1:0,
a second `gray` version with different weights, a model wrapper that records (and can hold)
every batch the server sends it, and helpers that synchronise on the server's own metrics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve.app import App
from serve.client import Client
from serve.loader import load
from serve.registry import Loader
from serve.repository import ModelVersion
from serve.settings import Settings
from tests.conftest import train_tiny


class ServerThread:
    """An in-process clfserve running its own event loop in a thread."""

    def __init__(self, settings: Settings, loader: Loader = load) -> None:
        self.settings = settings
        self._loader = loader
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.app: App | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="clfserve")

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.app = App(self.settings, loader=self._loader)
            await self.app.start()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._started.set()
        await self._stop.wait()
        await self.app.stop()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._started.wait(30), "server did not start"
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        assert self.app is not None
        return self.app.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, function: Callable[[App], Any]) -> Any:
        """Run `function(app)` on the server's loop (for reading state); returns its result."""
        assert self.loop is not None and self.app is not None

        async def run() -> Any:
            return function(self.app)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def request_stop(self) -> None:
        """Start a graceful shutdown (what SIGTERM does) without waiting for it; see `join`."""
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float = 60) -> bool:
        """Wait for the server to have stopped; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "server did not stop"


def make_settings(repository: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "repository": repository,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "poll_interval": 0.5,
        "grace": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerThread]]:
    """`start_server(repository, loader=..., **settings)` -> a running ServerThread."""
    servers: list[ServerThread] = []

    def start(repository: Path, loader: Loader = load, **overrides: Any) -> ServerThread:
        server = ServerThread(make_settings(repository, **overrides), loader)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(model_repository: Path, start_server: Callable[..., ServerThread]) -> ServerThread:
    """A ready server on the session repository (gray/1, rgb/1)."""
    running = start_server(model_repository, metrics_port=0)
    with Client(running.target) as client:
        client.wait_ready(60)
    return running


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.target, timeout=30) as connected:
        yield connected


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll `condition` until true; `timeout` only bounds a hang, it is never the expectation."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def metric(server: ServerThread, name: str, **labels: str) -> float:
    """The current value of one Prometheus sample of `server` (0 if absent)."""
    assert server.app is not None and server.app.metrics_port, "needs metrics_port=0"
    url = f"http://127.0.0.1:{server.app.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


class BrokenClassifier:
    """A loader whose model loads (labels, input shape) and then fails every call with a
    message that must never reach a client."""

    def __init__(self, version: ModelVersion) -> None:
        inner = load(version)
        self.labels, self.input_shape = inner.labels, inner.input_shape

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("secret internal detail")


class Recording:
    """A loader wrapping the real model: records a copy of every batch the server sends it and,
    while `gate` is clear, holds each model call (so requests can be made to queue behind it).

        recording = Recording(); server = start_server(repo, loader=recording.load)
    """

    def __init__(self, gate_open: bool = True) -> None:
        self.gate = threading.Event()
        if gate_open:
            self.gate.set()
        self.calling = threading.Event()  # set once a model call has started
        self._lock = threading.Lock()
        self.batches: list[tuple[str, np.ndarray]] = []  # (model name, inputs)
        self.returned = 0  # model calls that finished

    def load(self, version: ModelVersion) -> _Recorded:
        return _Recorded(load(version), version.name, self)

    def seen(self, model: str | None = None) -> list[np.ndarray]:
        with self._lock:
            return [batch for name, batch in self.batches if model in (None, name)]

    def rows(self, model: str | None = None) -> list[np.ndarray]:
        """Every input row the model received, in order."""
        return [row for batch in self.seen(model) for row in batch]


class _Recorded:
    def __init__(self, inner: Any, name: str, recording: Recording) -> None:
        self._inner, self._name, self._recording = inner, name, recording
        self.labels, self.input_shape = inner.labels, inner.input_shape

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self._recording._lock:
            self._recording.batches.append((self._name, np.array(batch, copy=True)))
        self._recording.calling.set()
        assert self._recording.gate.wait(120), "the test never opened the gate"
        probabilities = self._inner.predict(batch)
        with self._recording._lock:
            self._recording.returned += 1
        return probabilities


@pytest.fixture(scope="session")
def two_versions(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only repository: `gray/1` (the session model), `gray/2` (trained with another
    seed, so its answers differ from version 1's) and `gray/3` (a broken SavedModel)."""
    root = tmp_path_factory.mktemp("two-versions")
    shutil.copytree(model_repository / "gray", root / "gray")
    path = train_tiny(root, "gray", "gray", tmp_path_factory.mktemp("gray2-data"), seed=1)
    assert path.name == "2", path
    broken = root / "gray" / ".broken"
    shutil.copytree(root / "gray" / "1", broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    broken.rename(root / "gray" / "3")
    return root


def flat_png(value: int, size: tuple[int, int] = (28, 28)) -> bytes:
    """A uniform grayscale PNG: at the gray model's size it reaches the model as `value / 255`."""
    from tests.images import encode

    return encode(np.full(size, value, np.uint8))


Send = Callable[[grpc.Channel, bytes, float], object]


def gave_up(server: ServerThread) -> float:
    """Requests to gray/1 the server stopped working on because their deadline passed."""
    return sum(
        metric(server, "clfserve_requests_total", model="gray", version="1", code=code)
        for code in ("DEADLINE_EXCEEDED", "CANCELLED")
    )


def check_expired_request_never_reaches_model(
    start_server: Callable[..., ServerThread], repository: Path, send: Send
) -> None:
    """Hold the model on request A, let request B's deadline pass while it waits in the queue,
    then release the model: B must have been answered DEADLINE_EXCEEDED and never handed to
    the model; a later request C still is.

    `send(channel, png, timeout)` makes one `gray` request over one protocol; it raises
    `grpc.RpcError` on failure.
    """
    recording = Recording(gate_open=False)

    def seen() -> list[int]:  # each input row the model received, as its flat pixel value
        return [round(float(row.mean()) * 255) for row in recording.rows("gray")]

    server = start_server(repository, loader=recording.load, metrics_port=0)
    first, expired, later = 10, 128, 250
    with Client(server.target) as client, grpc.insecure_channel(server.target) as channel:
        client.wait_ready(60)
        holder = concurrent.futures.ThreadPoolExecutor(1)
        try:
            held = holder.submit(send, channel, flat_png(first), 60.0)
            assert recording.calling.wait(60), "request A never reached the model"
            with pytest.raises(grpc.RpcError) as caught:
                send(channel, flat_png(expired), 0.3)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # gRPC cancels the call at the client's deadline (counted CANCELLED); one whose
            # deadline had passed before it was read is refused (DEADLINE_EXCEEDED).
            wait_for(
                lambda: gave_up(server) == 1, what="the server to give up on the expired request"
            )
        finally:
            recording.gate.set()
            holder.shutdown(wait=True)
        assert held.exception() is None, (
            f"request A failed: {held.exception()!r}; the model saw {seen()} and returned "
            f"{recording.returned} times"
        )
        send(channel, flat_png(later), 60.0)
    assert seen() == [first, later], "the expired request reached the model"
