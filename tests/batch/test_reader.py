"""The one reader: a file becomes the model's tensor, an error text for the report, or None when
the per-file check says the file is not the one expected; the pool keeps submission order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from batch.fsutil import identity_of
from batch.reader import VANISHED, ReadAhead, read_file
from serve.manifest import Preprocessing

PRE = Preprocessing("grayscale", (2, 3))


def _png(path: Path, value: int) -> Path:
    Image.fromarray(np.full((2, 3), value, dtype=np.uint8)).save(path)
    return path


def test_a_file_becomes_the_tensor_or_an_error_text(tmp_path: Path) -> None:
    tensor = read_file(_png(tmp_path / "a.png", 51), PRE)
    assert isinstance(tensor, np.ndarray) and tensor.shape == (2, 3, 1)
    assert np.allclose(tensor, 51 / 255)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    error = read_file(tmp_path / "broken.png", PRE)
    assert isinstance(error, str) and "BytesIO" not in error and "0x" not in error
    assert read_file(tmp_path / "missing.png", PRE) == VANISHED
    assert read_file(tmp_path / "missing.png", PRE, vanished="gone") == "gone"
    os.mkdir(tmp_path / "folder.png")
    assert str(read_file(tmp_path / "folder.png", PRE)).startswith("cannot read file: ")


def test_the_check_sees_the_status_of_the_bytes_read(tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png", 0)
    seen = identity_of(path.stat())
    same = lambda _, stat: identity_of(stat) == seen  # noqa: E731
    assert isinstance(read_file(path, PRE, check=same), np.ndarray)
    _png(path, 255)  # rewritten since it was seen
    os.utime(path, ns=(seen[1] + 10**9, seen[1] + 10**9))
    assert read_file(path, PRE, check=same) is None


def test_the_pool_returns_reads_in_submission_order(tmp_path: Path) -> None:
    paths = [_png(tmp_path / f"{v}.png", v) for v in (0, 100, 200)]
    pool = ReadAhead(2)
    try:
        first = pool.submit([paths[2], tmp_path / "nope.png"], PRE)
        second = pool.submit([paths[0], paths[1]], PRE)
        a, b = first.result()
        c, d = second.result()
    finally:
        pool.close()
    assert isinstance(a, np.ndarray) and np.allclose(a, 200 / 255) and b == VANISHED
    assert isinstance(c, np.ndarray) and isinstance(d, np.ndarray)
    assert np.allclose(c, 0) and np.allclose(d, 100 / 255)
