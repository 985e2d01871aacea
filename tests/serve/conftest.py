"""Fixtures for the server tests: a real clfserve in a background thread on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from serve.app import App
from serve.client import Client
from serve.loader import load
from serve.registry import Loader
from serve.settings import Settings


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
