"""`clfbatch watch`: classify images as they arrive in an inbox, each exactly once.

The main loop notices files (watchdog events + a periodic rescan), waits until they settle,
groups them into micro-batches and hands each batch to `BatchWork`, which journals every step
before taking it. At start, whatever a crash left unfinished is completed first. SIGTERM/SIGINT
finish the current batch and return 0; errors that may pass (a full disk, a server away) are
retried with backoff while the files wait in the inbox.

Its parts: `startup` opens the backend, journal, report and inbox; `arrivals` queues settled files
into micro-batches; `work` carries a batch through the journaled steps; `model_follow` picks up a
newer model version between batches.

    settings = WatchSettings(inbox=Path("inbox"), out=Path("sorted"), model="cifar10")
    sys.exit(WatchDaemon(settings).run())
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from pathlib import Path

from batch.fsutil import Identity
from batch.pipeline import preferred_batch_size
from batch.summary import write_report_summary
from batch.watch.arrivals import Arrivals
from batch.watch.entry import Entry, NewFile
from batch.watch.events import EventSource
from batch.watch.inbox import Inbox, Settler
from batch.watch.model_follow import newer_backend
from batch.watch.outcome import describe
from batch.watch.predict import Rows
from batch.watch.settings import WatchSettings
from batch.watch.startup import open_work
from batch.watch.wake import Wake
from batch.watch.work import BatchWork
from serve.errors import ServeError

log = logging.getLogger("clfbatch.watch")
MAX_BACKOFF = 30.0
SUMMARY_INTERVAL = 1.0
MAX_SCAN_DELAY = 9  # rescan periods a busy daemon may put its rescan off by


class WatchDaemon:
    """The daemon: `run()` blocks until `request_stop()` (SIGTERM/SIGINT) and returns 0."""

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        self._stopping = False  # a plain flag: the signal handler must take no lock
        self._wake = Wake()
        self._arrivals = Arrivals(settings.batch_max or 64, settings.batch_wait)
        self._summary_due = False
        self._summary_at = 0.0
        self._backoff = 0.0
        self._needs_recovery = True  # whatever a crash left is finished before anything new
        self._pending: list[Entry] = []  # taken in; being predicted while the last one ends
        self._predicted: Future[Rows] | None = None

    def request_stop(self, *_: object) -> None:
        """Finish the batches in hand, then return. Safe in a signal handler: takes no lock."""
        self._stopping = True
        self._wake.ring()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        """Watch until stopped. Raises BatchError (and the backends' errors) at start."""
        s = self.settings
        with ExitStack() as stack:
            stack.callback(self._wake.close)
            worker, inbox = open_work(s, stack)
            size = s.batch_max or preferred_batch_size(worker.backend.preprocessing)
            self._arrivals.batch_max = size
            stack.callback(lambda: self._write_summary(worker, force=True))
            self._loop(worker, inbox)
        log.info("stopped")
        return 0

    def _attempt(self, worker: BatchWork, work: Callable[[], None]) -> bool:
        """Run one unit of work; on failure log it and wait (backoff) before the next try."""
        try:
            work()
        except Exception as exc:  # a full disk, a server away, a journal locked by a reader
            first = self._backoff == 0.0
            self._backoff = min(MAX_BACKOFF, max(1.0, self._backoff * 2))
            log.error(
                "%s; retrying in %.0f s (files stay in the inbox)",
                exc,
                self._backoff,
                exc_info=first and not isinstance(exc, OSError | ServeError | sqlite3.Error),
            )
            self._arrivals.clear()
            self._pending, self._predicted = [], None
            worker.drop_prefetched()
            self._needs_recovery = True
            self._sleep(self._backoff)
            return False
        self._backoff = 0.0
        return True

    def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, cut short by a stop request (file events do not cut it short)."""
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            self._wake.wait(left)

    def _loop(self, worker: BatchWork, inbox: Inbox) -> None:
        s = self.settings
        settler = Settler(s.settle)
        next_scan = next_reload = 0.0
        with EventSource(inbox, self._wake) as events:
            log.info(
                "watching %s (model %s version %d, action %s)",
                inbox.root,
                worker.backend.model,
                worker.backend.version,
                s.action.value,
            )
            while not self._stopping:
                if self._needs_recovery:
                    if self._attempt(worker, lambda: self._recover(worker)):
                        self._needs_recovery = False
                    next_scan = 0.0
                    continue
                now = time.monotonic()
                if now >= next_reload and not self._arrivals and not self._pending:
                    self._maybe_reload(worker)
                    next_reload = now + s.reload_s
                if now >= self._scan_at(next_scan):
                    for path in inbox.scan():
                        if path not in self._arrivals:
                            settler.note(path)
                    next_scan = now + s.rescan_s
                for path, closed in events.drain().items():
                    if (  # pragma: no branch - a late event for a file already queued: timing
                        path not in self._arrivals
                    ):
                        settler.note(path, closed=closed)
                self._enqueue(worker, inbox, settler.ready())
                if self._arrivals.due() or self._pending:
                    self._attempt(worker, lambda: self._step(worker, take=self._arrivals.due()))
                    continue
                self._write_summary(worker)
                due = min(self._scan_at(next_scan), next_reload)
                self._wake.wait(self._timeout(len(settler), due))
            if self._pending:  # stopping: the batch already taken in is finished, not dropped
                self._attempt(worker, lambda: self._step(worker, take=False))

    def _scan_at(self, next_scan: float) -> float:
        """When the rescan is due: every `rescan_s`, but put off while batches are in hand (by
        up to `MAX_SCAN_DELAY` periods). In a burst the events bring the files, and a rescan
        would look at every file still waiting in the inbox again (a stat and a journal lookup
        each): a fifth of the main loop's time when 10,000 files arrive at once."""
        if self._arrivals or self._pending:
            return next_scan + MAX_SCAN_DELAY * self.settings.rescan_s
        return next_scan

    def _timeout(self, pending: int, next_due: float) -> float:
        """How long to sleep: until the next rescan or model check, a batch's deadline, or (with
        files settling) a fraction of the settle time; woken early by events."""
        wait = next_due - time.monotonic()
        if (left := self._arrivals.time_left()) is not None:
            wait = min(wait, left)
        if pending:
            wait = min(wait, max(0.02, self.settings.settle / 4))
        return max(0.005, wait)

    def _enqueue(self, worker: BatchWork, inbox: Inbox, ready: list[tuple[Path, Identity]]) -> None:
        if not ready:
            return
        known = worker.journal.known(ready)
        for path, identity in ready:
            if path not in known:
                action, label = self.settings.action.value, inbox.true_label(path)
                self._arrivals.add(NewFile(path, inbox.relative(path), identity, action, label))

    def _step(self, worker: BatchWork, *, take: bool) -> None:
        """Take a new batch in (it is read, decoded and classified in the background) and
        finish the previous one (record, place, report) meanwhile."""
        fresh: list[Entry] = []
        if take:
            fresh = worker.journal.add_seen(self._arrivals.take())
        current, self._pending = self._pending, fresh
        previous, self._predicted = self._predicted, worker.predict_ahead(fresh) if fresh else None
        if current:
            assert previous is not None
            self._finish(worker, current, previous.result())

    def _finish(self, worker: BatchWork, entries: list[Entry], predicted: Rows) -> None:
        started = time.monotonic()
        reported = worker.advance(entries, predicted)
        self._summary_due |= any(e.true_label for e in reported)
        self._write_summary(worker)
        log.info(
            "batch of %d: %s in %.0f ms (model %s version %d)",
            len(entries),
            describe(reported),
            (time.monotonic() - started) * 1000,
            worker.backend.model,
            worker.backend.version,
        )

    def _recover(self, worker: BatchWork) -> None:
        """Finish whatever a crash or a failed batch left between seen and reported."""
        unfinished = worker.journal.unfinished()
        if not unfinished:
            return
        log.warning("recovering %d unfinished files from the journal", len(unfinished))
        size = self._arrivals.batch_max
        for start in range(0, len(unfinished), size):
            worker.advance(unfinished[start : start + size])
        log.info("recovered %d files", len(unfinished))
        self._summary_due = True

    def _write_summary(self, worker: BatchWork, *, force: bool = False) -> None:
        if not self._summary_due or (
            not force and time.monotonic() - self._summary_at < SUMMARY_INTERVAL
        ):
            return
        backend = worker.backend
        extra = {"model": backend.model, "version": backend.version, "files": worker.tally.files}
        write_report_summary(worker.tally, worker.report.path, extra)
        self._summary_due = False
        self._summary_at = time.monotonic()

    def _maybe_reload(self, worker: BatchWork) -> None:
        """Between batches: switch to a newer version of the model, if one appeared."""
        fresh = newer_backend(self.settings, worker.backend)
        if fresh is not None:
            old, worker.backend = worker.backend, fresh
            old.close()
            log.info("now using model %s version %d", fresh.model, fresh.version)
