"""Putting a classified file in its folder, never overwriting, and telling after a crash whether
that already happened.

Moves are `link(src, dest)` then `unlink(src)`: `link` refuses an existing name atomically, so
nothing is ever overwritten, and a crash between the two calls leaves two names of one inode,
which `check` recognises. Across file systems the file is copied to a hidden temporary name in
the destination folder, synced, linked to its real name, and only then is the inbox entry
removed. `copy` does the same without the removal; `link` makes a hard link (a symbolic link
across file systems); `none` leaves the file where it is.

    dest = free_name(outdir / "cat", "IMG_1.jpg", reserved)   # IMG_1.jpg, IMG_1-1.jpg, ...
    place(src, dest, "move", tmp_name=".clfwatch-17.tmp")
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path

from batch.fsutil import Identity, identity_of

ACTIONS: tuple[str, ...] = ("move", "copy", "link", "none")
_CROSS_DEVICE = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


class Collision(Exception):
    """The planned destination is taken by a file that is not ours: plan another name."""


class State(Enum):
    TODO = "todo"  # the source is in the inbox, unplaced
    DONE = "done"  # the file is where it was planned to go
    COLLISION = "collision"  # a foreign file took the planned name
    VANISHED = "vanished"  # neither the source nor the destination is there
    CHANGED = "changed"  # the source was rewritten after it was classified: take it again


def free_name(
    folder: Path,
    name: str,
    reserved: Iterable[Path] = (),
    exists: Callable[[Path], bool] = os.path.lexists,
) -> Path:
    """`folder/name`, or `stem-1.ext`, `stem-2.ext`, ... : the first that does not exist.

    `exists` may answer from a cached listing: `link` still refuses a name taken since.
    """
    taken = set(reserved)
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, number = folder / name, 0
    while candidate in taken or exists(candidate):
        number += 1
        candidate = folder / f"{stem}-{number}{suffix}"
    return candidate


def _copy_synced(src: Path, tmp: Path) -> None:
    with open(src, "rb") as reader, open(tmp, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())


def _publish_copy(src: Path, dest: Path, tmp: Path) -> None:
    """Copy via a hidden temporary name, then give it its real name without overwriting."""
    _copy_synced(src, tmp)
    try:
        os.link(tmp, dest)
    except FileExistsError:
        tmp.unlink()
        raise Collision(str(dest)) from None
    tmp.unlink()


def place(src: Path, dest: Path, action: str, *, tmp_name: str, make_dir: bool = True) -> None:
    """Carry out `action` from `src` to `dest`. Raises Collision if `dest` exists."""
    if action == "none":
        return
    if make_dir:
        dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / tmp_name
    if action == "copy":
        _publish_copy(src, dest, tmp)
        return
    try:
        os.link(src, dest)
    except FileExistsError:
        raise Collision(str(dest)) from None
    except OSError as exc:
        if exc.errno not in _CROSS_DEVICE:
            raise
        if action == "link":
            os.symlink(src.resolve(), dest)
            return
        _publish_copy(src, dest, tmp)
    if action == "move":
        os.unlink(src)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # `b` is a symbolic link to nothing
        return False


def _same_content(a: Path, b: Path) -> bool:
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def check(src: Path, identity: Identity, dest: Path | None, action: str, tmp_name: str) -> State:
    """Where a planned placement stands after a restart; finishes a half-done move.

    The source counts as present only if it is still the same file version (a new file that
    arrived under the same name later is a different arrival).
    """
    try:
        current: Identity | None = identity_of(src.stat())
    except OSError:
        current = None
    src_here = current == identity
    if action == "none":
        return State.DONE
    if dest is None:
        return State.VANISHED
    if dest.parent.is_dir():
        leftover = dest.parent / tmp_name
        if leftover.exists():
            leftover.unlink()  # our own unfinished copy; it never had a real name
    if not os.path.lexists(dest):
        if src_here:
            return State.TODO
        # Rewritten or replaced since it was classified: the new version is a new arrival.
        return State.CHANGED if current is not None else State.VANISHED
    if not src_here:
        # The source left the inbox and the planned name exists: the move completed, unless
        # the file there is plainly not ours.
        try:
            ours = dest.stat().st_size == identity[0]
        except OSError:
            ours = False
        return State.DONE if ours or action != "move" else State.VANISHED
    if action == "link":
        linked = dest.is_symlink() and Path(os.readlink(dest)) == src.resolve()
        return State.DONE if linked or _same_file(src, dest) else State.COLLISION
    if _same_file(src, dest) or _same_content(src, dest):
        if action == "move":
            os.unlink(src)  # the crash came between link/copy and unlink
        return State.DONE
    return State.COLLISION
