"""`clfbatch watch INBOX --model NAME --out OUTDIR`: the folder-watch daemon's command line.

`watch` is a typer command function; `batch.cli` registers it as `clfbatch watch`, and
`python -m batch.watch_cli INBOX ...` runs it on its own.

Exit codes: 0 stopped by SIGTERM/SIGINT after finishing its batch; 2 bad input (missing inbox,
unwritable output folder, unknown model or version, bad labels file, another daemon on the same
output folder, a report written for other classes); 3 server unreachable at start.
"""

from __future__ import annotations

import enum
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from batch.backends import DEFAULT_REPOSITORY
from batch.runner import BatchError
from batch.watch import WatchDaemon
from batch.watch_settings import WatchError, WatchSettings
from serve.errors import ModelNotFound, ServeError, VersionNotFound

EXIT_USAGE, EXIT_SERVER = 2, 3


class Action(enum.StrEnum):
    move = "move"
    copy = "copy"
    link = "link"
    none = "none"


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (for journald, Loki, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def setup_logging(log_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _fail(message: str, code: int) -> typer.Exit:
    print(f"clfbatch watch: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)


def watch(
    inbox: Annotated[Path, typer.Argument(help="Folder to watch for incoming images.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name in the repository.")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/<label>/, _uncertain, _rejected.")],
    version: Annotated[
        int | None, typer.Option(help="Pin a model version (default: newest, followed live).")
    ] = None,
    repository: Annotated[Path, typer.Option(help="Model repository.")] = DEFAULT_REPOSITORY,
    server: Annotated[
        str | None, typer.Option(help="HOST:PORT of a clfserve to classify through.")
    ] = None,
    action: Annotated[Action, typer.Option(help="What to do with each file.")] = Action.move,
    min_confidence: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Below it, files go to OUT/_uncertain/.")
    ] = 0.0,
    report: Annotated[
        Path | None, typer.Option(help="Report CSV/JSONL (default: OUT/labels.csv).")
    ] = None,
    settle_ms: Annotated[
        int, typer.Option(min=0, help="A file must keep its size and mtime this long.")
    ] = 1000,
    batch_max: Annotated[
        int | None,
        typer.Option(min=1, help="Most files per micro-batch (default: as clfbatch run's)."),
    ] = None,
    batch_ms: Annotated[
        int, typer.Option(min=0, help="Longest wait for a micro-batch to fill.")
    ] = 100,
    recursive: Annotated[bool, typer.Option(help="Watch every sub-folder too.")] = False,
    labels: Annotated[
        Path | None, typer.Option(help="CSV of path,label: true labels for arriving files.")
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Labels and scores kept per image.")] = 3,
    rescan_s: Annotated[
        float, typer.Option(min=0.05, help="Full rescan period (backs up lost events).")
    ] = 2.0,
    reload_s: Annotated[
        float, typer.Option(min=0.1, help="How often to look for a newer model version.")
    ] = 5.0,
    journal: Annotated[
        Path | None, typer.Option(help="Journal file (default: OUT/.clfwatch/journal.sqlite).")
    ] = None,
    log_json: Annotated[bool, typer.Option(help="Log one JSON object per line.")] = False,
) -> None:
    """Classify images as they arrive in INBOX and file them under OUT/<label>/, each once."""
    setup_logging(log_json)
    if labels is not None and not labels.is_file():
        raise _fail(f"labels file {labels} does not exist", EXIT_USAGE)
    settings = WatchSettings(
        inbox=inbox,
        out=out,
        model=model,
        version=version,
        repository=repository,
        server=server,
        action=action.value,
        min_confidence=min_confidence,
        report=report,
        settle=settle_ms / 1000,
        batch_max=batch_max,
        batch_wait=batch_ms / 1000,
        recursive=recursive,
        labels_file=labels,
        top_k=top_k,
        rescan=rescan_s,
        reload=reload_s,
        journal=journal,
    )
    daemon = WatchDaemon(settings)
    daemon.install_signals()
    try:
        code = daemon.run()
    except (WatchError, BatchError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except (ModelNotFound, VersionNotFound) as exc:
        where = f"server {server}" if server else f"repository {repository}"
        raise _fail(f"{exc} (in {where})", EXIT_USAGE) from None
    except ServeError as exc:
        raise _fail(str(exc), EXIT_SERVER if server else EXIT_USAGE) from None
    raise typer.Exit(code)


def main() -> None:
    typer.run(watch)


if __name__ == "__main__":
    main()
