"""One JSON object per log line (for journald, Loki, ...), shared by `clfserve` and `clfbatch`.

    handler.setFormatter(JsonFormatter())
    # {"time": "2026-01-02T03:04:05.678Z", "level": "info", "logger": "serve", "message": "..."}

A traceback, when the record has one, goes in an `exception` key.
"""

from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    """`time` (UTC, ISO 8601), `level`, `logger`, `message`, and `exception` when there is one."""

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
