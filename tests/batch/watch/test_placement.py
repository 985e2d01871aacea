"""Placing a file without ever overwriting, and telling after a crash where a placement stands."""

from __future__ import annotations

import os
import tempfile
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


def test_check_tells_our_link_from_a_foreign_file(tmp_path: Path) -> None:
    """For `link`, only the same file counts as placed, or a symbolic link to it (what `place`
    makes across file systems); a copy with the same bytes is somebody else's file."""
    src = _file(tmp_path / "inbox" / "a.png")
    seen = identity_of(src.stat())
    hard, soft = tmp_path / "out" / "hard.png", tmp_path / "out" / "soft.png"
    place(src, hard, "link", tmp_name=TMP)
    soft.symlink_to(src.resolve())
    foreign = _file(tmp_path / "out" / "foreign.png")  # the same bytes, another file
    assert check(src, seen, hard, "link", TMP) is State.DONE
    assert check(src, seen, soft, "link", TMP) is State.DONE
    assert check(src, seen, foreign, "link", TMP) is State.COLLISION
    assert src.exists()


def test_check_finishes_a_move_and_keeps_a_copy_source(tmp_path: Path) -> None:
    """Killed after a copy across file systems reached its real name: `copy` is done and leaves
    the source; `move` is finished by removing it."""
    for action in ("copy", "move"):
        src = _file(tmp_path / "inbox" / f"{action}.png")
        seen = identity_of(src.stat())
        dest = _file(tmp_path / "out" / f"{action}.png")  # a copy: same bytes, another inode
        assert check(src, seen, dest, action, TMP) is State.DONE
        assert src.exists() == (action == "copy") and dest.read_bytes() == b"image"


def test_check_with_a_symbolic_link_to_nothing_at_the_planned_name(tmp_path: Path) -> None:
    """A dangling link at the destination is never followed or replaced: with the source still
    here it is a collision (another name is planned); with the source gone it is our own `link`
    whose target went away (done), or, for `move`, not our file (vanished)."""
    src = _file(tmp_path / "inbox" / "a.png")
    seen = identity_of(src.stat())
    dangling = tmp_path / "out" / "a.png"
    dangling.parent.mkdir()
    dangling.symlink_to(tmp_path / "nowhere.png")
    for action in ("move", "copy", "link"):
        assert check(src, seen, dangling, action, TMP) is State.COLLISION, action
    assert src.exists()
    with pytest.raises(Collision):
        place(src, dangling, "move", tmp_name=TMP)
    src.unlink()
    assert check(src, seen, dangling, "link", TMP) is State.DONE
    assert check(src, seen, dangling, "move", TMP) is State.VANISHED
    assert dangling.is_symlink() and not dangling.exists()


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
    reason="needs a second file system",
)
@pytest.mark.parametrize("action", ["move", "copy", "link"])
def test_each_action_across_file_systems(tmp_path: Path, action: str) -> None:
    """No hard link across file systems: `move` and `copy` copy (through a temporary name),
    `link` makes a symbolic link; `check` then tells each one done."""
    src = _file(tmp_path / "inbox" / "a.png")
    seen = identity_of(src.stat())
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        dest = Path(other) / "cat" / "a.png"
        place(src, dest, action, tmp_name=TMP)
        assert dest.read_bytes() == b"image" and not (dest.parent / TMP).exists()
        assert src.exists() == (action != "move")
        assert dest.is_symlink() == (action == "link")
        if action == "link":
            assert Path(os.readlink(dest)) == src.resolve()
        assert check(src, seen, dest, action, TMP) is State.DONE
        assert src.exists() == (action != "move")
