"""`clfbatch watch INBOX --model NAME --out OUTDIR`: the folder-watch daemon's command line.

`watch` is a typer command; `batch.cli` registers it as `clfbatch watch`, the daemon's one entry
point. Exit codes (`batch.errors`): 0 stopped by SIGTERM/SIGINT after finishing its batch;
2 bad input (missing inbox, unwritable output folder, unknown model or version, bad labels file,
another daemon on the same output folder, a report written for other classes); 3 server
unreachable at start.
"""

from __future__ import annotations

import logging
import sys

import typer

from batch.errors import EXIT_SERVER, EXIT_USAGE, BatchError
from batch.options import command
from batch.watch.daemon import WatchDaemon
from batch.watch.settings import WatchSettings
from serve.errors import ModelNotFound, ServeError, VersionNotFound
from serve.logs import JsonFormatter


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


@command(WatchSettings)
def watch(settings: WatchSettings) -> None:
    """Classify images as they arrive in INBOX and file them under OUT/<label>/, each once."""
    if settings.version is not None and settings.version_label:
        raise _fail("pass --version or --version-label, not both", EXIT_USAGE)
    setup_logging(settings.log_json)
    daemon = WatchDaemon(settings)
    daemon.install_signals()
    try:
        code = daemon.run()
    except BatchError as exc:
        raise _fail(str(exc), exc.code) from None
    except (ModelNotFound, VersionNotFound) as exc:
        where = (
            f"server {settings.server}" if settings.server else f"repository {settings.repository}"
        )
        raise _fail(f"{exc} (in {where})", EXIT_USAGE) from None
    except ServeError as exc:
        raise _fail(str(exc), EXIT_SERVER if settings.server else EXIT_USAGE) from None
    raise typer.Exit(code)
