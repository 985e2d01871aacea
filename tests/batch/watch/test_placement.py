"""Placing a file without ever overwriting, and telling after a crash where a placement stands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batch.fsutil import identity_of
from batch.watch.placement import Collision, State, check, free_name, place

TMP = ".clfwatch-1.tmp"


def _file(path: Path, data: bytes = b"image") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_free_name_skips_existing_and_reserved_names(tmp_path: Path) -> None:
    _file(tmp_path / "a.png")
    _file(tmp_path / "a-1.png")
    assert free_name(tmp_path, "a.png", [tmp_path / "a-2.png"]) == tmp_path / "a-3.png"
    assert free_name(tmp_path, "b.png") == tmp_path / "b.png"


@pytest.mark.parametrize("action", ["move", "copy", "link", "none"])
def test_each_action_and_a_taken_name(tmp_path: Path, action: str) -> None:
    src = _file(tmp_path / "inbox" / "a.png")
    dest = tmp_path / "out" / "cat" / "a.png"
    place(src, dest, action, tmp_name=TMP)
    assert src.exists() == (action != "move")
    if action == "none":
        assert not dest.exists()
        return
    assert dest.read_bytes() == b"image" and not (dest.parent / TMP).exists()
    if action != "move":
        assert os.path.samefile(src, dest) == (action == "link")
    other = _file(tmp_path / "inbox" / "b.png", b"other")
    with pytest.raises(Collision):
        place(other, dest, action, tmp_name=TMP)
    assert dest.read_bytes() == b"image" and other.read_bytes() == b"other"


def test_check_tells_each_state(tmp_path: Path) -> None:
    src = _file(tmp_path / "inbox" / "a.png")
    seen = identity_of(src.stat())
    dest = tmp_path / "out" / "a.png"
    dest.parent.mkdir()
    assert check(src, seen, dest, "move", TMP) is State.TODO
    assert check(src, seen, None, "move", TMP) is State.VANISHED
    assert check(src, seen, dest, "none", TMP) is State.DONE

    os.link(src, dest)  # killed between link and unlink: the move is finished here
    _file(dest.parent / TMP)  # and a leftover temporary copy is removed
    assert check(src, seen, dest, "move", TMP) is State.DONE
    assert not src.exists() and dest.exists() and not (dest.parent / TMP).exists()
    assert check(src, seen, dest, "move", TMP) is State.DONE  # source gone, dest ours

    src = _file(tmp_path / "inbox" / "b.png")
    seen = identity_of(src.stat())
    foreign = _file(tmp_path / "out" / "b.png", b"someone else's")
    assert check(src, seen, foreign, "move", TMP) is State.COLLISION
    _file(src, b"rewritten!")  # another version of the file under the same name
    assert check(src, seen, tmp_path / "out" / "new.png", "move", TMP) is State.CHANGED
    src.unlink()
    assert check(src, seen, tmp_path / "out" / "new.png", "move", TMP) is State.VANISHED
