"""`--workers N`: N server processes sharing one port (SO_REUSEPORT), each with its own batchers.

One Python process serves with one event loop, so on a machine with more cores the RPC handling
(not the model) becomes the limit. The first process binds the port (port 0 picks one), then
starts N-1 copies of itself on that port; the kernel spreads new connections over them. Each
worker loads the repository, watches it and answers health on its own; each serves its own
/metrics (on the next ports after `--metrics-port`, or free ones). A worker that dies is started
again; the first process stops them all when it stops.

    workers = WorkerProcesses(argv, settings, port=bound_port)
    workers.start(); ...; await workers.watch(stop); workers.stop(grace)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from serve.settings import Settings

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # prctl(2)
PARENT_PID_ENV = "CLF_WORKER_PARENT_PID"  # set by the first process in the workers it starts


def die_with_parent() -> None:
    """In a worker the first process started: SIGTERM when that process dies, even by SIGKILL
    (Linux), and exit at once if it died before this line ran.

    Called after exec, not as Popen's preexec_fn: between fork and exec a process with
    TensorFlow's threads running may only call async-signal-safe functions, and loading libc
    through ctypes there crashed workers at start (SIGABRT, 1 start in a few)."""
    parent = os.environ.pop(PARENT_PID_ENV, None)
    if parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit(f"clfserve: worker: the first process ({parent}) has already exited")


class WorkerProcesses:
    """The extra processes of `--workers N` (the calling process is the first worker)."""

    def __init__(
        self, argv: Sequence[str], settings: Settings, port: int, rest_port: int | None = None
    ) -> None:
        self._settings = settings
        self._base = [sys.executable, "-m", "serve", *argv]
        self._port = port
        self._rest = [] if rest_port is None else ["--rest-port", str(rest_port)]
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * (settings.workers - 1)

    def _command(self, index: int) -> list[str]:
        metrics = self._settings.metrics_port
        metrics_flag = ["--metrics-port", "off"] if metrics is None else [
            "--metrics-port", str(metrics + index + 1 if metrics else 0)
        ]  # fmt: skip
        return [*self._base, "--port", str(self._port), *self._rest, "--workers", "1",
                "--reuse-port", *metrics_flag]  # fmt: skip

    def start(self) -> None:
        for index in range(len(self._processes)):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._processes[index] = subprocess.Popen(
            self._command(index),
            stdin=subprocess.DEVNULL,
            env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
        )
        log.info("worker %d started (pid %d)", index + 2, self._processes[index].pid)  # type: ignore[union-attr]

    async def watch(self, stop: asyncio.Event, every: float = 1.0) -> None:
        """Restart a worker that exited while `stop` is not set."""
        while not stop.is_set():
            for index, process in enumerate(self._processes):
                if process is not None and process.poll() is not None and not stop.is_set():
                    log.error("worker %d exited with %s; starting it again", index + 2,
                              process.returncode)  # fmt: skip
                    self._spawn(index)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    def stop(self, grace: float) -> None:
        """SIGTERM every worker (each drains within `grace`), then wait for them."""
        live = [p for p in self._processes if p is not None and p.poll() is None]
        for process in live:
            process.terminate()
        for process in live:
            try:
                process.wait(grace + 10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a worker hung past grace + 10 s
                process.kill()
                process.wait()
