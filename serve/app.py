"""Wiring: settings -> metrics -> data plane (registry, batchers) -> gRPC server; reload; signals.

    clfserve --repository trained --port 8500        # or: python -m serve ...
    CLFSERVE_PORT=0 clfserve --port-file /tmp/port   # port 0 picks a free port

The server listens before the models are loaded (health reports NOT_SERVING until they are),
then watches the repository (watchdog, with a periodic rescan as the fallback) and re-syncs
the registry after every burst of changes. SIGTERM/SIGINT: report NOT_SERVING, stop accepting,
let in-flight requests finish within the grace period, unload, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from serve.dataplane import DataPlane
from serve.grpc.server import GrpcServer
from serve.http import HttpServer
from serve.loader import loader_for
from serve.logs import JsonFormatter
from serve.metrics import ServeMetrics
from serve.registry import Loader
from serve.security import ConfigError, Security
from serve.settings import Settings
from serve.workers import WorkerProcesses, die_with_parent

log = logging.getLogger("serve")
DEBOUNCE = 0.3  # seconds of quiet after a file event before re-syncing
_READS = frozenset({EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE})


class _Wake(FileSystemEventHandler):
    """Forwards changes under the repository to the event loop (reads, ours included, are not)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self._loop, self._event = loop, event

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _READS:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._event.set)


class App:
    """One clfserve instance: `await start()`, then `await stop()`."""

    def __init__(self, settings: Settings, *, loader: Loader | None = None) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        loader = loader or loader_for(settings.runtime, settings.max_batch_size)  # tests: theirs
        self.dataplane = DataPlane(settings, self.metrics, loader=loader, on_change=self._changed)
        self.grpc = GrpcServer(settings, self.dataplane)
        self.port = self.grpc.port
        self.metrics_port: int | None = None
        rest = settings.rest_port is not None
        self.http = HttpServer(settings, self.dataplane, self.grpc.security) if rest else None
        self.rest_port: int | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._observer: Observer | None = None  # type: ignore[valid-type]

    async def _changed(self) -> None:
        await self.grpc.update_health()

    def track(self, task: asyncio.Task[None]) -> None:
        """A background task that `stop()` cancels."""
        self._tasks.append(task)

    async def start(self) -> None:
        """Listen, then load the repository and start watching it in the background."""
        if self.settings.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(self.settings.metrics_port)
        if self.settings.reuse_port:  # a worker joining a shared port takes connections only
            await self.dataplane.start()  # once it can answer them
        await self.grpc.start()
        log.info("listening on %s:%d", self.settings.host, self.port)
        if self.settings.port_file is not None:
            self.settings.port_file.write_text(f"{self.port}\n")
        if self.http is not None:
            self.rest_port = await self.http.start()
            log.info("REST on %s:%d", self.settings.host, self.rest_port)
            if self.settings.rest_port_file is not None:
                self.settings.rest_port_file.write_text(f"{self.rest_port}\n")
        self._tasks.append(asyncio.create_task(self._lifecycle(), name="lifecycle"))

    async def _lifecycle(self) -> None:
        while not await self._sync():  # until the first scan succeeds: not ready meanwhile
            await asyncio.sleep(self.settings.poll_interval)
        await self.grpc.update_health()
        log.info("models loaded: %s", ", ".join(self.dataplane.registry.available_names()))
        self._watch()
        interval = self.settings.poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), interval)
            while self._dirty.is_set():  # debounce: wait for a burst of events to end
                self._dirty.clear()
                await asyncio.sleep(DEBOUNCE)
            await self._sync()

    async def _sync(self) -> bool:
        """One scan of the repository; a failure (EIO on a network mount, say) is logged."""
        try:
            await self.dataplane.registry.sync()
        except Exception:
            interval = self.settings.poll_interval
            log.exception("repository sync failed; retrying in %.1f s", interval)
            return False
        return True

    def _watch(self) -> None:
        root = self.settings.repository
        if not self.settings.watch or not root.is_dir():
            return
        observer = Observer()
        observer.schedule(_Wake(asyncio.get_running_loop(), self._dirty), str(root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    async def stop(self) -> None:
        """Graceful: NOT_SERVING, finish in-flight requests within the grace period, unload."""
        log.info("shutting down (grace %.1f s)", self.settings.grace)
        http = [self.http.stop()] if self.http is not None else []
        await asyncio.gather(self.grpc.stop(self.settings.grace), *http)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._observer is not None:
            self._observer.stop()
            await asyncio.to_thread(self._observer.join, 5)
        await self.dataplane.close()
        self.metrics.close()
        log.info("stopped")


async def serve(
    settings: Settings, stop: asyncio.Event | None = None, argv: Sequence[str] = ()
) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives (signals only in the main thread).

    With `settings.workers > 1`, also runs the other workers (`argv`: this process's flags).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    app = App(settings)
    await app.start()
    workers = None
    if settings.workers > 1:
        workers = WorkerProcesses(argv, settings, app.port, app.rest_port)
        workers.start()
        app.track(asyncio.create_task(workers.watch(stop), name="workers"))
    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if workers is not None:
            stopping = asyncio.create_task(asyncio.to_thread(workers.stop, settings.grace))
        await app.stop()
        if workers is not None:
            await stopping


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The `clfserve` console script."""
    die_with_parent()
    settings = Settings.from_args(argv)
    configure_logging(settings)
    try:  # before anything starts: a server meant to be closed never starts open
        log.info("security: %s", Security.from_settings(settings).describe())
    except ConfigError as exc:
        print(f"clfserve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        asyncio.run(serve(settings, argv=list(sys.argv[1:] if argv is None else argv)))
    except ConfigError as exc:  # the port cannot be bound: one line, not a traceback
        print(f"clfserve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m serve` runs serve/__main__.py
    sys.exit(main())
