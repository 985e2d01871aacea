"""Small file-system helpers shared by `run` and `watch`: file versions, durable renames.

identity_of(path.stat())                 # (size, mtime_ns, inode)
atomic_write(path, lambda tmp: tmp.write_text("..."))
fsync_dir(folder)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

Identity = tuple[int, int, int]  # size, mtime_ns, inode: a file's version at one path


def identity_of(stat: os.stat_result) -> Identity:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def fsync_dir(folder: Path) -> None:
    """Make renames and links inside `folder` durable (a power cut, not only a kill)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
