"""Finding settled files in the inbox: which paths count, a periodic rescan, and a settle rule.

Events (`batch.watch.events`) can be lost (queue overflow, network file systems, files present
before start), so a rescan of the whole inbox backs them up. A file is taken only when it is
complete: temporary names are ignored, and its size and mtime must have stayed the same for the
settle time, or the writer must have closed it (inotify's close-after-write) with nothing
changed since.

    inbox = Inbox(root, recursive=False, label_dirs={"cat", "dog"}, exclude=[outdir])
    settler = Settler(settle=1.0)
    for path in inbox.scan(): settler.note(path)
    ready = settler.ready()                     # [(path, identity), ...], each once
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from batch.fsutil import Identity, identity_of
from serve.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)
TEMP_SUFFIXES = frozenset({".part", ".tmp", ".crdownload", ".partial", ".swp", ".download"})


def is_temporary(name: str) -> bool:
    """Dotfiles, editor backups and in-progress download names are never read."""
    lower = name.lower()
    return lower.startswith(".") or lower.endswith("~") or Path(lower).suffix in TEMP_SUFFIXES


class Inbox:
    """Which paths under the inbox the daemon takes, and their true labels.

    Files directly in the inbox always count; files in sub-folders named after a class count
    (one level, the folder name is their true label); with `recursive`, every sub-folder counts.
    Folders in `exclude` (the output folder, when it lies inside the inbox) never count.
    """

    def __init__(
        self,
        root: Path,
        *,
        recursive: bool = False,
        label_dirs: Iterable[str] = (),
        exclude: Iterable[Path] = (),
        labels_file: dict[str, str] | None = None,
    ) -> None:
        self.root = root.resolve()
        self.recursive = recursive
        self.label_dirs = frozenset(label_dirs)
        self.exclude = tuple(p.resolve() for p in exclude)
        self.labels_file = labels_file or {}
        self._skipped: set[str] = set()
        self._prefix = str(self.root) + os.sep
        self._exclude = tuple(str(p) for p in self.exclude)

    def relative(self, path: Path) -> str:
        """`path` (under the root) relative to it, with `/` (string work: this runs per file)."""
        return str(path)[len(self._prefix) :].replace(os.sep, "/")

    def accepts(self, path: Path) -> bool:
        """Whether `path` (absolute, under the root) is an image this daemon should take."""
        text = str(path)
        if not text.startswith(self._prefix):
            return False
        parts = text[len(self._prefix) :].split(os.sep)
        if any(is_temporary(part) for part in parts):
            return False
        if any(text == ex or text.startswith(ex + os.sep) for ex in self._exclude):
            return False
        if (
            len(parts) > 1
            and not self.recursive
            and not (len(parts) == 2 and parts[0] in self.label_dirs)
        ):
            return False
        return self._is_image(path, "/".join(parts))

    def _is_image(self, path: Path, rel: str) -> bool:
        if os.path.splitext(rel)[1].lower() not in IMAGE_SUFFIXES:
            return self._skip(rel, "not an image file name")
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8: the journal and report need text
            return self._skip(rel.encode("utf-8", "replace").decode(), "not a UTF-8 file name")
        return True

    def _skip(self, rel: str, why: str) -> bool:
        if rel not in self._skipped:
            self._skipped.add(rel)
            log.warning("leaving %s in the inbox: %s", rel, why)
        return False

    def true_label(self, path: Path) -> str | None:
        """The labels file's entry for the file, else its folder's name when that is a class."""
        rel = self.relative(path)
        if rel in self.labels_file:
            return self.labels_file[rel]
        if path.name in self.labels_file:
            return self.labels_file[path.name]
        folders = rel.split("/")[:-1]
        return folders[-1] if folders and folders[-1] in self.label_dirs else None

    def _walk_dirs(self) -> Iterator[Path]:
        yield self.root
        if self.recursive:
            for dirpath, dirnames, _ in os.walk(self.root):
                dirnames[:] = sorted(
                    d for d in dirnames if not is_temporary(d) and not self._excluded(dirpath, d)
                )
                for name in dirnames:
                    yield Path(dirpath) / name
        else:
            for name in sorted(self.label_dirs):
                if (self.root / name).is_dir():
                    yield self.root / name

    def _excluded(self, dirpath: str, name: str) -> bool:
        full = Path(dirpath, name)
        return any(full == ex or full.is_relative_to(ex) for ex in self.exclude)

    def scan(self) -> Iterator[Path]:
        """Every acceptable file now in the inbox (the rescan that backs up lost events)."""
        for folder in self._walk_dirs():
            try:
                with os.scandir(folder) as entries:
                    names = sorted(e.name for e in entries if e.is_file(follow_symlinks=False))
            except OSError as exc:  # a folder removed while we looked
                log.debug("cannot list %s: %s", folder, exc)
                continue
            prefix = "" if folder == self.root else folder.relative_to(self.root).as_posix() + "/"
            for name in names:
                path = folder / name
                if (
                    not is_temporary(name)
                    and str(path) not in self._exclude
                    and self._is_image(path, prefix + name)
                ):
                    yield path


@dataclass
class _Settling:
    identity: Identity
    changed_at: float  # monotonic time the identity was last seen to change


class Settler:
    """Decides when a noticed file is complete. Not thread-safe: the main loop owns it.

    A file counts as complete when the writer closed it (close-after-write) or its mtime is
    already older than the settle time when it is noticed (it was there before the daemon
    started, or its events were lost); otherwise when its size and mtime held still for the
    settle time. The reader checks the identity again after reading, so a file that changes
    after this decision is caught there.
    """

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self._settling: dict[Path, _Settling] = {}
        self._ready: dict[Path, Identity] = {}

    def __len__(self) -> int:
        return len(self._settling)

    def note(self, path: Path, *, closed: bool = False) -> None:
        """Something happened to `path` (an event, or the rescan found it)."""
        try:
            stat = path.lstat()
        except OSError:
            stat = None
        if stat is None or not S_ISREG(stat.st_mode):  # gone, or a link, FIFO, device ...
            self._settling.pop(path, None)
            self._ready.pop(path, None)
            return
        identity = identity_of(stat)
        old = (time.time_ns() - stat.st_mtime_ns) / 1e9 >= self.settle
        if closed or old:
            self._settling.pop(path, None)
            self._ready[path] = identity
            return
        self._ready.pop(path, None)
        settling = self._settling.get(path)
        if settling is None or settling.identity != identity:
            self._settling[path] = _Settling(identity, time.monotonic())

    def ready(self) -> list[tuple[Path, Identity]]:
        """Files that are complete by the rules above; each is returned once."""
        ready, self._ready = list(self._ready.items()), {}
        now = time.monotonic()
        for path, settling in list(self._settling.items()):
            if now - settling.changed_at < self.settle:
                continue
            try:
                identity = identity_of(path.lstat())
            except OSError:
                del self._settling[path]
                continue
            if identity != settling.identity:
                self._settling[path] = _Settling(identity, now)
                continue
            ready.append((path, identity))
            del self._settling[path]
        return ready
