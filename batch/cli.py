"""`clfbatch`: classify folders of images into reports.

    clfbatch run ./images --model cifar10              # report: ./images-cifar10.csv
    clfbatch run ./images --model cifar10 --server 127.0.0.1:8500
    clfbatch models
    clfbatch report images-cifar10.csv                 # recompute the metrics of a report
    clfbatch features cat.png --model cifar10          # feature maps, a grid PNG per conv layer
    clfbatch watch ./inbox --model cifar10 --out ./labelled   # auto-label arrivals, each once

Exit codes are listed in `batch.errors`; an interrupted run leaves only `<report>.partial`.
Every option can also be set as a `CLFBATCH_<OPTION>` variable (`batch.options`).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from batch.backend_choice import open_chosen
from batch.backends import DEFAULT_REPOSITORY, Backend
from batch.errors import EXIT_FILE_ERRORS, EXIT_INTERRUPTED, EXIT_SERVER, EXIT_USAGE, BatchError
from batch.features import FeatureSettings
from batch.options import command
from batch.ray_engine import RayEngine
from batch.report import read_report, report_labels
from batch.runner import Engine, RunSettings, count_images, run_folder
from batch.summary import Tally, summary_prefix, summary_text, write_summary
from batch.watch.cli import watch
from serve.errors import ModelNotFound, ServeError, VersionNotFound

app = typer.Typer(
    help="Classify folders of images with the models of a clfserve repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    _err(f"clfbatch: {message}")
    return typer.Exit(code)


def _gallery(report: Path, images: Path | None, size: int, quiet: bool) -> None:
    from batch.gallery import write_gallery  # matplotlib: only when a gallery is asked for

    for path in write_gallery(report, images, size, warn=_err):
        if not quiet:
            print(f"gallery: {path}")


@app.command()
@command(RunSettings)
def run(settings: RunSettings) -> None:
    """Classify every image in FOLDER into a report (and metrics when labels are known)."""
    s = settings
    report = s.report
    if report.exists() and not s.force:
        raise _fail(f"{report} exists; pass --force to overwrite it or --out for another name")
    if s.version is not None and s.version_label:
        raise _fail("pass --version or --version-label, not both")
    if s.embeddings is not None and s.engine == Engine.ray:
        raise _fail("--embeddings works with --engine local only")
    if s.labels not in ("auto", "none") and not Path(s.labels).is_file():
        raise _fail(f"labels file {s.labels} does not exist (use auto, none or a CSV file)")
    if not report.parent.is_dir():
        raise _fail(f"cannot write the report: {report.parent} is not a folder")
    backend: Backend | RayEngine
    try:
        counts = count_images(s.folder, s.recursive)
        # RayEngine imports ray: only when it is asked for
        backend = RayEngine(s) if s.engine == Engine.ray else open_chosen(s)
    except BatchError as exc:
        raise _fail(str(exc), exc.code) from None
    except (ModelNotFound, VersionNotFound) as exc:
        where = f"server {s.server}" if s.server else f"repository {s.repository}"
        raise _fail(f"{exc} (in {where})") from None
    except ServeError as exc:
        if s.server:
            raise _fail(f"cannot use clfserve at {s.server}: {exc}", EXIT_SERVER) from None
        raise _fail(str(exc)) from None  # pragma: no cover - local opens raise no other ServeError
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C mid-load has no deterministic test
        raise _fail("interrupted before any file was classified", EXIT_INTERRUPTED) from None
    except Exception as exc:  # a broken SavedModel raises whatever TensorFlow raises
        raise _fail(f"cannot load model {s.model!r}: {exc}") from None
    try:
        if isinstance(backend, RayEngine):
            result = backend.run(s, warn=_err, counts=counts)
        else:
            result = run_folder(s, backend, warn=_err, counts=counts)
    except BatchError as exc:
        raise _fail(str(exc), exc.code) from None
    except KeyboardInterrupt:
        raise _fail(
            f"interrupted; no report written (incomplete rows in {report}.partial)",
            EXIT_INTERRUPTED,
        ) from None
    except ServeError as exc:
        raise _fail(f"{exc}; incomplete rows left in {report}.partial", EXIT_SERVER) from None
    finally:
        backend.close()
    if not s.quiet:
        metrics = result.tally.metrics()
        if metrics is not None:
            print(summary_text(metrics))
        print(f"report: {result.report}")
        for path in result.summary_files:
            print(f"summary: {path}")
        for path in result.embedding_files:
            print(f"embeddings: {path}")
        print(f"{s.model} v{backend.version}: {result.summary_line()}")
    if s.gallery:
        _gallery(result.report, s.folder, s.gallery_size, s.quiet)
    if s.fail_on_error and result.tally.errors:
        raise typer.Exit(EXIT_FILE_ERRORS)


@app.command()
def models(
    repository: Annotated[Path, typer.Option(help="Model repository.")] = DEFAULT_REPOSITORY,
) -> None:
    """List the repository's models and versions: classes, input size, test accuracy."""
    from batch.listing import models_table

    if not repository.is_dir():
        raise _fail(f"repository {repository} does not exist")
    text = models_table(repository)
    if text is None:
        raise _fail(f"no complete model versions in {repository}")
    print(text, end="")


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A CSV or JSONL report from `clfbatch run`.")],
    out_prefix: Annotated[
        Path | None, typer.Option(help="Summary files prefix (default: beside the report).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only write the files.")] = False,
    gallery: Annotated[
        bool, typer.Option("--gallery", help="Draw <report>.gallery.png/.html (also unlabelled).")
    ] = False,
    gallery_size: Annotated[int, typer.Option(help="Images in the gallery.", min=1)] = 48,
    images: Annotated[
        Path | None,
        typer.Option(help="Folder the report's paths are relative to (default: by its name)."),
    ] = None,
) -> None:
    """Recompute accuracy, the classification report and the confusion matrix from a report."""
    if not path.is_file():
        raise _fail(f"{path} does not exist")
    try:
        labels = report_labels(path)
        if not labels:
            raise _fail(f"{path} has no probability columns: not a clfbatch report")
        tally = Tally(labels)
        for row in read_report(path):
            tally.add(row)
    except (ValueError, KeyError) as exc:
        raise _fail(f"{path} is not a readable clfbatch report: {exc}") from None
    if tally.unknown_labels:
        names = ", ".join(sorted(tally.unknown_labels))
        _err(f"warning: rows with labels the model does not have were left out: {names}")
    metrics = tally.metrics()
    if metrics is None and not gallery:
        raise _fail(f"{path}: no classified row has a true label; nothing to compute")
    if metrics is not None:
        files = write_summary(metrics, out_prefix or summary_prefix(path), {"report": str(path)})
        if not quiet:
            print(summary_text(metrics))
            for file in files:
                print(f"summary: {file}")
            print(f"{tally.files} rows, {tally.errors} errors, {metrics.total} labelled")
    if gallery:
        _gallery(path, images, gallery_size, quiet)


@app.command()
@command(FeatureSettings)
def features(settings: FeatureSettings) -> None:
    """Draw the feature maps of each convolutional layer for one IMAGE: a grid PNG per layer."""
    from batch.features import draw_features  # imports TensorFlow and Keras

    try:
        paths = draw_features(settings)
    except BatchError as exc:
        raise _fail(str(exc), exc.code) from None
    for path in paths:
        print(f"features: {path}")


app.command("watch")(watch)


def main() -> None:
    """Console entry point (`clfbatch`)."""
    # gRPC's own INFO lines (a failed TLS handshake) would bury our one-line error message.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Ctrl-C / SIGINT interrupts a run (exit 130, only `.partial` left) even when a shell started
    # us with SIGINT ignored (a background job of a script), as for `watch` and `clfserve`.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m batch` runs batch/__main__.py
    main()
