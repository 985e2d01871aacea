"""What the watch daemon opens before its loop, in order, each closed by the caller's ExitStack:
the output folder's lock, the labels file, the backend, the journal, the report (with the tally
of the rows it already holds) and the inbox.

    with ExitStack() as stack:
        worker, inbox = open_work(settings, stack)   # raises BatchError / the backends' errors
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

from batch.backend_choice import open_chosen
from batch.errors import BatchError
from batch.labels import read_labels_file
from batch.report import read_report
from batch.summary import Tally, summary_paths, summary_prefix
from batch.watch.inbox import Inbox
from batch.watch.journal import Journal
from batch.watch.report import AppendReport, ReportMismatch
from batch.watch.settings import WatchSettings, check_folders, hold_lock
from batch.watch.work import BatchWork

log = logging.getLogger("clfbatch.watch")


def open_work(s: WatchSettings, stack: ExitStack) -> tuple[BatchWork, Inbox]:
    """Check the folders, take the lock and open everything a batch needs; `stack` closes it all
    (the backend in use then, which may be a newer version than the one opened here)."""
    check_folders(s)
    stack.callback(hold_lock(s.out).close)
    labels_file = read_labels_file(s.labels) if s.labels else None
    backend = open_chosen(s)
    if unknown := sorted(set((labels_file or {}).values()) - set(backend.labels)):
        log.warning(
            "%s names classes the model does not have: %s (left out of the metrics)",
            s.labels,
            ", ".join(unknown),
        )
    stack.callback(lambda: worker.backend.close() if worker else backend.close())
    worker: BatchWork | None = None
    journal = Journal(s.journal_path)
    stack.callback(journal.close)
    report = AppendReport(s.report_path, backend.labels)
    try:
        report.open()
    except ReportMismatch as exc:
        raise BatchError(str(exc)) from None
    tally = Tally(backend.labels)
    for row in read_report(report.path):
        tally.add(row)
    worker = BatchWork(
        backend=backend,
        journal=journal,
        report=report,
        tally=tally,
        out=s.out.resolve(),
        min_confidence=s.min_confidence,
        top_k=s.top_k,
    )
    stack.callback(worker.close)
    exclude = [s.out, s.journal_path.parent, *summary_paths(summary_prefix(report.path))]
    inbox = Inbox(
        s.inbox,
        recursive=s.recursive,
        label_dirs=backend.labels,
        exclude=exclude,
        labels_file=labels_file,
    )
    return worker, inbox
