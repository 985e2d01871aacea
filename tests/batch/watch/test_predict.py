"""The watch daemon's predictor: files read a few per reader task, each checked against the
identity the journal saw, in the entries' order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from batch.backends import open_backend
from batch.fsutil import identity_of
from batch.watch.entry import SEEN, Entry
from batch.watch.predict import READ_CHUNK, Predictor
from tests.batch.watch.helpers import image_bytes


def _entry(ident: int, path: Path, identity: tuple[int, int, int]) -> Entry:
    return Entry(ident, path, path.name, identity, SEEN, "move", None, 0.0)


def test_rows_keep_the_entries_order_and_each_entry_is_checked_against_its_own_identity(
    model_repository: Path, tmp_path: Path
) -> None:
    """More files than one reader task takes, plus a second entry for one path with an older
    identity (the file changed after it was seen: its row is None, the current one is read)."""
    rng = np.random.default_rng(3)
    paths = []
    for index in range(2 * READ_CHUNK + 3):
        path = tmp_path / f"f{index:02d}.png"
        path.write_bytes(image_bytes("gray", "dark" if index % 2 else "light", rng))
        paths.append(path)
    entries = [_entry(i, p, identity_of(p.stat())) for i, p in enumerate(paths)]
    size, mtime, inode = entries[1].identity
    entries.insert(2, _entry(100, paths[1], (size + 1, mtime, inode)))  # same path, changed
    predictor = Predictor(open_backend("gray", repository=model_repository), top_k=1)
    try:
        rows = predictor.predict(entries)
    finally:
        predictor.close()
    assert rows[2] is None
    named = [row for row in rows if row is not None]
    assert [row.path for row in named] == [e.rel for e in entries if e.id != 100]
    assert [row.predicted for row in named] == [
        "light" if i % 2 == 0 else "dark" for i in range(len(paths))
    ]
