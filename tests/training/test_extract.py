"""Dataset archives are unpacked once into the cache, atomically, even by concurrent processes."""

from __future__ import annotations

import io
import multiprocessing
import tarfile
from pathlib import Path

import pytest
from training.data import DataError, extract_archive

FILES = {f"ds/{split}/{label}/{i}.bin": bytes([i]) * 50_000 for split in ("train", "test")
         for label in ("a", "b") for i in range(20)}  # fmt: skip


def make_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def assert_complete(target: Path) -> None:
    for name, data in FILES.items():
        assert (target / name).read_bytes() == data, name
    assert (target / ".complete").is_file()


def _unpack(archive: str) -> str:
    return str(extract_archive(Path(archive)))


def test_concurrent_unpacks_agree_and_leave_no_staging(tmp_path, monkeypatch):
    monkeypatch.setenv("CLFSERVE_CACHE", str(tmp_path / "cache"))
    archive = make_archive(tmp_path / "ds.tar.gz")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        targets = pool.map(_unpack, [str(archive)] * 3)
    assert len(set(targets)) == 1
    target = Path(targets[0])
    assert_complete(target)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no staging left


def test_an_interrupted_unpack_is_replaced_and_a_complete_one_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("CLFSERVE_CACHE", str(tmp_path / "cache"))
    archive = make_archive(tmp_path / "ds.tar.gz")
    target = extract_archive(archive)
    (target / ".complete").unlink()  # as an older, non-atomic unpack killed half way left it
    (target / "ds/train/a/0.bin").write_bytes(b"half")
    assert extract_archive(archive) == target
    assert_complete(target)
    marker = target / "reused"
    marker.touch()
    assert extract_archive(archive) == target and marker.exists()


def test_a_corrupt_archive_is_a_data_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CLFSERVE_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_archive(tmp_path / "ds.tar.gz").read_bytes()[:3000])
    with pytest.raises(DataError, match="cannot unpack"):
        extract_archive(archive)
    assert list((tmp_path / "cache" / "clfserve" / "datasets").iterdir()) == []
