"""`clfbatch run --embeddings`: one vector per classified file, in the report's row order, equal
to the penultimate layer computed here in Keras, in-process and through a clfserve subprocess."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from batch.backends import ServerAccess
from batch.embeddings import NpyStream, open_recorder
from batch.errors import EXIT_USAGE, BatchError
from serve.manifest import Manifest
from serve.preprocess import preprocess_bytes
from tests.batch.conftest import run_cli
from tests.batch.test_remote import start_clfserve
from tests.serve.test_embedding import strip_embedding


def _expected(version: Path, folder: Path, paths: list[str]) -> np.ndarray:
    manifest = Manifest.read(version / "manifest.json")
    model = keras.models.model_from_json((version / "model.json").read_text())
    model.set_weights([w.numpy() for w in tf.saved_model.load(str(version)).weights])
    features = keras.Model(model.inputs[0], model.layers[-1].input)
    images = [preprocess_bytes((folder / p).read_bytes(), manifest.preprocessing) for p in paths]
    return np.asarray(features(np.stack(images), training=False))


def _classified(report: Path) -> list[str]:
    with report.open(newline="") as handle:
        return [row["path"] for row in csv.DictReader(handle) if not row["error"]]


def _check(out: Path, report: Path, version: Path, folder: Path) -> None:
    vectors = np.load(out)
    order = json.loads(out.with_suffix(".json").read_text())
    paths = _classified(report)
    assert order["paths"] == paths and len(paths) == 20  # 20 images; the corrupt one has no row
    assert (order["model"], order["version"]) == ("rgb", 1)
    assert vectors.dtype == np.float32 and vectors.shape == (20, order["dimension"])
    np.testing.assert_allclose(vectors, _expected(version, folder, paths), atol=1e-5)


@pytest.fixture
def folder(rgb_folder: tuple[Path, dict[str, str]]) -> Path:
    root, _ = rgb_folder
    (root / "blue" / "broken.png").write_bytes(b"\x89PNG not an image")  # an error row
    return root


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("embedding-repository")
    shutil.copytree(model_repository / "rgb", root / "rgb")
    shutil.copytree(model_repository / "rgb", root / "old")
    data = json.loads((root / "old" / "1" / "manifest.json").read_text())
    (root / "old" / "1" / "manifest.json").write_text(json.dumps({**data, "task": "old"}))
    strip_embedding(root / "old" / "1")
    process, target = start_clfserve(root, tmp_path_factory.mktemp("serve") / "port")
    try:
        yield target
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_local_run_writes_rows_in_report_order(
    model_repository: Path, folder: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "vectors.npy", tmp_path / "report.csv"
    done = run_cli(
        "run", folder, "--model", "rgb", "--repository", model_repository, "--out", report,
        "--embeddings", out, "--batch-size", "4", "--labels", "none", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"embeddings: {out}" in done.stdout
    _check(out, report, model_repository / "rgb" / "1", folder)


def test_server_run_gives_the_same_file(
    server: str, model_repository: Path, folder: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "served.npy", tmp_path / "served.csv"
    done = run_cli(
        "run", folder, "--model", "rgb", "--server", server, "--out", report,
        "--embeddings", out, "--batch-size", "8", "--labels", "none", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _check(out, report, model_repository / "rgb" / "1", folder)


def test_a_version_without_the_signature_names_the_conversion(
    server: str, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "none.npy"
    done = run_cli(
        "run", folder, "--model", "old", "--server", server, "--out", tmp_path / "r.csv",
        "--embeddings", out, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "scripts/convert.py" in done.stderr and "embedding" in done.stderr
    assert not out.exists() and not (tmp_path / "r.csv").exists()


def test_a_local_version_without_the_signature_names_the_conversion(
    repository_copy: Path, folder: Path, tmp_path: Path
) -> None:
    strip_embedding(repository_copy / "rgb" / "1")
    out = tmp_path / "none.npy"
    done = run_cli(
        "run", folder, "--model", "rgb", "--repository", repository_copy, "--runtime",
        "tensorflow", "--out", tmp_path / "r.csv", "--embeddings", out, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "has no embedding signature" in done.stderr and "scripts/convert.py" in done.stderr
    assert not list(tmp_path.glob("none.*")) and not list(tmp_path.glob("r.csv*"))


def test_a_bad_embeddings_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    taken = tmp_path / "taken.npy"
    taken.write_bytes(b"an earlier run's vectors")
    refusals = {
        tmp_path / "vectors.txt": "the file must end in .npy",
        tmp_path / "nowhere" / "vectors.npy": "nowhere is not a folder",
        taken: "taken.npy exists; pass --force to overwrite it",
    }
    backend = SimpleNamespace(model="rgb", version=1)  # never called: FILE is checked first
    for out, message in refusals.items():
        with pytest.raises(BatchError, match=message) as refused:
            open_recorder(backend, out, repository=tmp_path, server=None, access=ServerAccess())
        assert refused.value.code == EXIT_USAGE
    assert taken.read_bytes() == b"an earlier run's vectors"
    assert [p.name for p in tmp_path.iterdir()] == ["taken.npy"]


def test_a_stream_closed_before_commit_leaves_its_rows_in_the_partial_file(
    tmp_path: Path,
) -> None:
    """What a failed or interrupted run leaves: the rows so far on disk, no FILE.npy."""
    stream = NpyStream(tmp_path / "vectors.npy")
    stream.add(np.ones((2, 3), np.float32))
    stream.close()
    stream.close()  # safe twice
    assert not (tmp_path / "vectors.npy").exists()
    assert (tmp_path / "vectors.npy.partial").stat().st_size == 128 + 2 * 3 * 4
