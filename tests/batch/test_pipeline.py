"""The pipeline in-process with a real tiny model: walking, ordering, batching, error rows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from batch.backends import LocalBackend, open_backend
from batch.pipeline import (
    ImageFile,
    WalkCounts,
    classify_files,
    preferred_batch_size,
    walk_images,
)
from serve.errors import ModelNotFound, VersionNotFound
from serve.loader import load
from serve.manifest import Preprocessing
from serve.preprocess import preprocess_bytes
from serve.repository import resolve
from tests.batch.conftest import write_rgb_folder
from tests.images import encode, rgb_pixels


@pytest.fixture(scope="module")
def rgb_backend(model_repository: Path) -> LocalBackend:
    backend = open_backend("rgb", repository=model_repository)
    assert isinstance(backend, LocalBackend)
    return backend


def test_walk_is_sorted_skips_non_images_and_special_files(tmp_path: Path) -> None:
    for relative in ("b/2.png", "b/1.JPG", "a/x/3.png", "top.webp", "notes.txt", ".hidden.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.png")
    counts = WalkCounts()
    found = [relative for relative, _ in walk_images(tmp_path, counts=counts)]
    assert found == ["top.webp", "a/x/3.png", "b/1.JPG", "b/2.png"]
    assert (counts.images, counts.skipped) == (4, 2)  # notes.txt and the FIFO
    flat = [relative for relative, _ in walk_images(tmp_path, recursive=False)]
    assert flat == ["top.webp"]


def test_walk_skips_a_folder_that_vanishes_before_it_is_listed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for relative in ("a.png", "sub/b.png"):
        (tmp_path / relative).write_bytes(b"x")
    walk = walk_images(tmp_path)
    assert next(walk)[0] == "a.png"
    shutil.rmtree(tmp_path / "sub")  # seen in its parent's listing, gone before its own
    assert list(walk) == []


def test_walk_counts_an_entry_it_cannot_stat_as_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    os.symlink("loop.png", tmp_path / "loop.png")  # stat(): too many levels of symbolic links
    counts = WalkCounts()
    assert [relative for relative, _ in walk_images(tmp_path, counts=counts)] == ["a.png"]
    assert (counts.images, counts.skipped) == (1, 1)


def test_preferred_batch_size_scales_with_input() -> None:
    assert preferred_batch_size(Preprocessing("rgb", (32, 32))) == 128
    assert preferred_batch_size(Preprocessing("grayscale", (28, 28))) == 256
    assert preferred_batch_size(Preprocessing("rgb", (224, 224))) == 8


def test_rows_in_order_equal_direct_model_calls_for_any_batch_size(
    rgb_backend: LocalBackend, model_repository: Path, tmp_path: Path
) -> None:
    truth = write_rgb_folder(tmp_path)
    (tmp_path / "blue" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    files = [
        ImageFile(path, relative, truth.get(relative)) for relative, path in walk_images(tmp_path)
    ]
    version = resolve(model_repository, "rgb")
    classifier = load(version)
    good = [f for f in files if f.relative in truth]
    inputs = np.stack(
        [preprocess_bytes(f.path.read_bytes(), version.manifest.preprocessing) for f in good]
    )
    expected = classifier.predict(inputs)
    for batch_size in (1, 5, None):
        rows = list(classify_files(rgb_backend, files, batch_size=batch_size, top_k=2, workers=2))
        assert [r.path for r in rows] == [f.relative for f in files]
        bad = [r for r in rows if r.error]
        assert [r.path for r in bad] == ["blue/corrupt.png"]
        assert "cannot decode" in (bad[0].error or "") and bad[0].predicted is None
        classified = [r for r in rows if not r.error]
        probs = np.array([r.probabilities for r in classified])
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
        for row, p in zip(classified, expected, strict=True):
            assert row.predicted == version.manifest.classes[int(p.argmax())]
            assert row.confidence == pytest.approx(float(p.max()))
            assert len(row.top_k) == 2 and row.top_k[0][0] == row.predicted
            assert row.model == "rgb" and row.version == 1
            assert row.true_label == truth[row.path]


def test_a_file_that_vanishes_becomes_an_error_row(
    rgb_backend: LocalBackend, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(encode(rgb_pixels("red", rng)))
        paths.append(tmp_path / name)
    files = [ImageFile(p, p.name) for p in paths]
    paths[1].unlink()  # listed, then gone before it is read
    rows = list(classify_files(rgb_backend, files))
    assert [r.error is None for r in rows] == [True, False, True]
    assert "vanished" in (rows[1].error or "")


def test_unknown_model_or_version_lists_what_exists(model_repository: Path) -> None:
    with pytest.raises(ModelNotFound, match="known models: gray, rgb"):
        open_backend("nope", repository=model_repository)
    with pytest.raises(VersionNotFound, match="available versions: 1"):
        open_backend("gray", version=9, repository=model_repository)
