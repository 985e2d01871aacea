"""One way to read an input file: path -> bytes -> the model's float32 tensor, or an error text.

`run` and `watch` both read through here, in a pool of reader threads (Pillow releases the GIL
while it decodes and resizes) while the model works on the previous batch.

    tensor = read_image(path, pre)                          # raises ServeError or OSError
    pool = ReadAhead(threads=4, name="clfbatch-read")
    future = pool.submit([path_a, path_b], pre)             # -> [ndarray or error text, ...]
    same = lambda path, stat: identity_of(stat) == seen     # a per-file check hook:
    future = pool.submit([path], pre, check=same)           # None when the file changed
    pool.close()
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from serve.errors import ServeError
from serve.manifest import Preprocessing
from serve.preprocess import DEFAULT_MAX_PIXELS, preprocess_bytes

VANISHED = "file vanished before it could be read"
# Pillow names the in-memory buffer in its messages; it means nothing in a report.
_MEMORY_REPR = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>")

Check = Callable[[Path, os.stat_result], bool]  # False: the file is not the one expected
Read = np.ndarray | str | None  # the tensor, an error text, or None (the check said no)


def read_image(path: Path, pre: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One file -> the model's float32 input. Raises ServeError or OSError."""
    return preprocess_bytes(path.read_bytes(), pre, max_pixels=max_pixels)


def read_file(
    path: Path,
    pre: Preprocessing,
    *,
    check: Check | None = None,
    vanished: str = VANISHED,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Read:
    """The model input, an error text for the report, or None if `check` rejects the file
    (its status is taken from the open handle, so it describes the bytes that were read)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
            stat = os.fstat(handle.fileno()) if check is not None else None
    except FileNotFoundError:
        return vanished
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
    if check is not None and stat is not None and not check(path, stat):
        return None
    try:
        return preprocess_bytes(data, pre, max_pixels=max_pixels)
    except ServeError as exc:
        return _MEMORY_REPR.sub("", str(exc))


class ReadAhead:
    """Reader threads: `submit` a few files, get a future of their reads, in the same order."""

    def __init__(
        self,
        threads: int,
        *,
        name: str = "clfbatch-read",
        vanished: str = VANISHED,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._vanished = vanished
        self._max_pixels = max_pixels

    def submit(
        self, paths: Sequence[Path], pre: Preprocessing, check: Check | None = None
    ) -> Future[list[Read]]:
        return self._pool.submit(self._read_all, list(paths), pre, check)

    def _read_all(self, paths: list[Path], pre: Preprocessing, check: Check | None) -> list[Read]:
        return [
            read_file(p, pre, check=check, vanished=self._vanished, max_pixels=self._max_pixels)
            for p in paths
        ]

    def close(self) -> None:
        """Drop what has not started and wait for the reads in progress. Safe to call twice."""
        self._pool.shutdown(wait=True, cancel_futures=True)
