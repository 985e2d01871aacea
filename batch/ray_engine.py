"""`clfbatch run --engine ray`: the folder classified by a pool of Ray actors that hold the model.

This process walks the folder as the local engine does and hands Ray Data the listing, blocks of
(index, relative path, true label), one batch each. `map_batches` sends the blocks to an actor
pool (`--actors`); each actor loaded the model once and reads, decodes and classifies a block
with the local engine's own code (`batch.reader.read_file`, `batch.pipeline.classify_chunk`), so
a file gets the same row whichever engine classified it. Rows come back in the order the actors
finish: they are spilled to an unlinked temporary file beside the report as they arrive (the
progress counts them), then written to the report in the folder's order. Memory stays flat:
this process keeps one file offset per image, Ray keeps the listing and the batches in flight.

An actor that dies is restarted by Ray and its block is run again (Ray Data's actor fault
tolerance); a block's rows are delivered once, so the report has every file exactly once.
The folder and the repository must be at the same path on every node of a cluster (a shared
file system), and clfserve installed in the cluster's Python.

    engine = RayEngine(settings)                      # BatchError: no Ray, --server, bad model
    result = engine.run(settings, warn=print, counts=counts)
    engine.close()
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from batch.errors import EXIT_SERVER, EXIT_USAGE, BatchError
from batch.labels import label_source
from batch.pipeline import ImageFile, WalkCounts, classify_chunk, preferred_batch_size, walk_images
from batch.progress import make_progress
from batch.reader import read_file
from batch.report import ReportWriter
from batch.runner import RunResult, RunSettings, finish_run
from batch.summary import Tally
from serve.repository import resolve

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:")


def ray_failure(exc: BaseException) -> str:
    """One line for a Ray error: the exception a task or actor raised, when Ray's message
    carries its traceback (an actor that could not load the model: the loader's error, not
    "The actor died because of an error raised in its creation task"), without colour codes."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    raised = [line for line in lines if _RAISED.match(line)]
    return raised[-1] if raised else (lines[0] if lines else repr(exc))


INSTALL_HINT = "--engine ray needs Ray: pip install 'clfserve[ray]'"
# Fault injection for the tests: the first actor to find this path absent creates it and kills
# its own process (SIGKILL) before it returns its rows, once per run.
KILL_ONCE_ENV = "CLFBATCH_RAY_KILL_ONCE"
# The local instance's shared-memory object store: the listing (~50 bytes a file) and the rows in
# flight are small, and Ray spills to disk beyond it; Ray's default (30% of RAM) is 7 GB here.
_OBJECT_STORE_BYTES = 1 << 30


def import_ray(*, local: bool = False) -> Any:
    """The `ray` module with Ray Data, or BatchError (usage exit code) saying how to install it.

    `local`: the instance this process will start listens on loopback only (Ray's single-node
    mode, read when ray is imported) rather than on the machine's network address."""
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data
    except ImportError:
        raise BatchError(INSTALL_HINT, EXIT_USAGE) from None
    return ray


class ClassifyActor:
    """One Ray actor: the model, loaded once; a block of listed files -> pickled report rows."""

    def __init__(
        self,
        root: str,
        repository: str,
        model: str,
        version: int,
        runtime: str,
        top_k: int,
        kill_once: str | None = None,
    ) -> None:
        from batch.backends import LocalBackend

        self._root = Path(root)
        self._backend = LocalBackend(resolve(Path(repository), model, version), runtime)
        self._top_k = top_k
        self._kill_once = Path(kill_once) if kill_once else None

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        backend = self._backend
        items = [
            ImageFile(self._root / relative, str(relative), label or None)
            for relative, label in zip(block["relative"], block["true_label"], strict=True)
        ]
        reads = [read_file(item.path, backend.preprocessing) for item in items]
        rows = classify_chunk(backend, items, reads, self._top_k)
        if self._kill_once is not None and _first_to_create(self._kill_once):
            os.kill(os.getpid(), signal.SIGKILL)  # pragma: no cover - SIGKILL: coverage is lost
        records = np.empty(len(rows), dtype=object)
        records[:] = [pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL) for row in rows]
        return {
            "index": block["index"],
            "failed": np.array([row is None or row.error is not None for row in rows]),
            "row": records,
        }


def _first_to_create(path: Path) -> bool:
    try:
        path.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True  # pragma: no cover - runs only in the actor that then SIGKILLs itself


class RayEngine:
    """A resolved model version for one `clfbatch run --engine ray`; `run` connects to Ray."""

    def __init__(self, options: RunSettings) -> None:
        self._ray = import_ray(local=options.address is None)
        if options.server:
            raise BatchError("--engine ray loads the model from --repository; drop --server")
        version = resolve(
            Path(options.repository), options.model, options.version, options.version_label
        )
        self.model = version.name
        self.version = version.version
        self.labels = version.manifest.classes
        self.preprocessing = version.manifest.preprocessing
        self._started = False

    def run(
        self, options: RunSettings, *, warn: Callable[[str], None], counts: WalkCounts
    ) -> RunResult:
        """Classify the folder into the report, then the summary files; like `run_folder`."""
        ray = self._ray
        self._connect(options.address)
        report = options.report
        truth = label_source(options.labels, self.labels, warn)
        size = options.batch_size or preferred_batch_size(self.preprocessing)
        started = time.monotonic()
        tally = Tally(self.labels)
        with (
            ReportWriter(report, self.labels, options.report_format) as writer,
            tempfile.TemporaryFile(dir=report.parent, prefix=f".{report.name}.") as spill,
        ):
            blocks, total = _listing(options, truth, size)
            dataset = ray.data.from_arrow(blocks).map_batches(
                ClassifyActor,
                batch_size=size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=options.actors or self._default_actors()),
                num_cpus=1,
                fn_constructor_kwargs={
                    "root": str(options.folder.resolve()),
                    "repository": str(Path(options.repository).resolve()),
                    "model": self.model,
                    "version": self.version,
                    "runtime": str(options.runtime),
                    "top_k": options.top_k,
                    "kill_once": os.environ.get(KILL_ONCE_ENV) or None,
                },
            )
            try:
                offsets = _spill(dataset, spill, total, options.quiet)
            except ray.exceptions.RayError as exc:
                raise BatchError(f"Ray failed: {ray_failure(exc)}", EXIT_SERVER) from None
            for row in _in_order(spill, offsets):
                writer.write(row)
                tally.add(row)
            writer.commit()
        result = RunResult(report, tally, counts.skipped, time.monotonic() - started)
        finish_run(result, self.model, self.version, warn=warn)
        return result

    def _connect(self, address: str | None) -> None:
        ray = self._ray
        # Quiet: Ray's own notices (token authentication, an actor's restart arguments) would
        # bury the progress; errors reach us as exceptions. Set RAY_BACKEND_LOG_LEVEL to see them.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
        try:
            if address is None:  # a local instance sized to this machine
                ray.init(
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    object_store_memory=_OBJECT_STORE_BYTES,
                    **quiet,
                )
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = address or "a local instance"
            raise BatchError(f"cannot start or reach Ray ({where}): {exc}", EXIT_SERVER) from None
        self._started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts rows; Ray's would draw per operator
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)

    def _default_actors(self) -> int:  # pragma: no cover - every Ray test passes --actors
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        """Disconnect from Ray (and stop the local instance if this run started it)."""
        if self._started:
            self._started = False
            self._ray.shutdown()


def _listing(
    options: RunSettings, truth: Callable[[str], str | None], size: int
) -> tuple[list[Any], int]:
    """The folder's images as Arrow tables of `size` rows: index, relative path, true label."""
    import pyarrow as pa

    blocks: list[Any] = []
    total = 0
    relative: list[str] = []
    labels: list[str | None] = []

    def flush() -> None:
        if relative:
            index = pa.array(np.arange(total - len(relative), total, dtype=np.int64))
            columns = {"index": index, "relative": relative, "true_label": labels}
            blocks.append(pa.table(columns, schema=_schema(pa)))
            relative.clear()
            labels.clear()

    for name, _ in walk_images(options.folder, recursive=options.recursive):
        relative.append(name)
        labels.append(truth(name))
        total += 1
        if len(relative) == size:
            flush()
    flush()
    return blocks, total


def _schema(pa: Any) -> Any:
    columns = [("index", pa.int64()), ("relative", pa.string()), ("true_label", pa.string())]
    return pa.schema(columns)


def _spill(dataset: Any, spill: IO[bytes], total: int, quiet: bool) -> np.ndarray:
    """Write the rows to `spill` as they come back; returns each file's row offset in it."""
    offsets = np.full(total, -1, dtype=np.int64)
    with make_progress(total, quiet=quiet) as progress:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for index, record in zip(batch["index"].tolist(), batch["row"], strict=True):
                offsets[index] = spill.tell()
                spill.write(record)
            progress.advance(len(batch["index"]), int(np.count_nonzero(batch["failed"])))
    missing = int(np.count_nonzero(offsets < 0))
    if missing:  # pragma: no cover - Ray Data delivers every block's rows or raises RayError
        raise BatchError(f"Ray returned no row for {missing} of {total} files", EXIT_SERVER)
    return offsets


def _in_order(spill: IO[bytes], offsets: np.ndarray) -> Iterator[Any]:
    """The spilled rows in the folder's order (the local engine's)."""
    spill.flush()
    for offset in offsets.tolist():
        spill.seek(offset)
        yield pickle.load(spill)
