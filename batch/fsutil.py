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


def _read_umask() -> int:
    current = os.umask(0)  # the only way to read it: set straight back, once, at import
    os.umask(current)
    return current


_UMASK = _read_umask()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, then rename over `path`.

    The file gets the permissions a plain `open(path, "w")` would give (mkstemp's are 0600).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
