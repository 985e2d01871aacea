"""The model manager on its own: version directories holding a manifest and an empty
`saved_model.pb`, loaded by a fake loader (no TensorFlow), so versions fail, change and disappear
in milliseconds."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from serve.batching import Batcher
from serve.errors import ModelNotFound, ModelNotReady
from serve.loader import Classifier
from serve.manifest import Manifest, Preprocessing
from serve.registry import ModelRegistry
from serve.repository import MANIFEST_FILE, SAVED_MODEL_FILE, ModelVersion
from serve.settings import VersionPolicy
from serve.versions import VersionState

CLASSES = ("a", "b")


class Uniform:
    """A classifier answering 1/len(labels) for every class."""

    input_shape = (2, 2, 1)

    def __init__(self, labels: tuple[str, ...] = CLASSES) -> None:
        self.labels = labels

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.full((len(batch), len(self.labels)), 1 / len(self.labels), np.float32)


def write_version(root: Path, name: str, number: int) -> Path:
    path = root / name / str(number)
    path.mkdir(parents=True)
    (path / SAVED_MODEL_FILE).write_bytes(b"")
    Manifest(name, number, CLASSES, Preprocessing("grayscale", (2, 2))).write(path / MANIFEST_FILE)
    return path


def registry(root: Path, loader: Callable[[ModelVersion], Uniform]) -> ModelRegistry:
    def make_batcher(name: str, version: int, classifier: Classifier) -> Batcher:
        return Batcher(classifier.predict, name=f"{name}-v{version}")

    return ModelRegistry(root, VersionPolicy.parse("latest:1"), make_batcher, loader=loader)


def states(models: ModelRegistry, name: str) -> dict[int, tuple[VersionState, str]]:
    return {v.version: (v.state, v.reason) for v in models.model(name).versions}


def test_a_model_is_not_ready_before_the_first_sync_then_not_found(tmp_path: Path) -> None:
    models = registry(tmp_path, lambda _: Uniform())
    with pytest.raises(ModelNotReady, match="still loading models; 'toy' is not up yet"):
        models.acquire("toy")
    asyncio.run(models.sync())
    with pytest.raises(ModelNotFound):
        models.acquire("toy")


def test_labels_that_disagree_with_the_manifest_fail_the_version(tmp_path: Path) -> None:
    write_version(tmp_path, "toy", 1)
    models = registry(tmp_path, lambda _: Uniform(("b", "a")))
    asyncio.run(models.sync())
    reason = "ManifestError: the model's labels disagree with its manifest"
    assert states(models, "toy") == {1: (VersionState.FAILED, reason)}


def test_a_failed_version_is_retried_once_its_files_change(tmp_path: Path) -> None:
    path = write_version(tmp_path, "toy", 1)
    loads: list[int] = []

    def fails_first(version: ModelVersion) -> Uniform:
        loads.append(version.version)
        if len(loads) == 1:
            raise OSError("half-copied")
        return Uniform()

    models = registry(tmp_path, fails_first)

    async def main() -> None:
        await models.sync()
        assert states(models, "toy") == {1: (VersionState.FAILED, "OSError: half-copied")}
        await models.sync()  # unchanged: not loaded again
        assert loads == [1]
        manifest = path / MANIFEST_FILE
        stat = manifest.stat()
        os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        await models.sync()
        assert states(models, "toy") == {1: (VersionState.AVAILABLE, "")}
        await models.close()

    asyncio.run(main())
    assert loads == [1, 1]


def test_a_removed_model_is_dropped_once_its_last_handle_is_released(tmp_path: Path) -> None:
    """A handle released twice counts once: the unload still waits for the other handle."""
    write_version(tmp_path, "toy", 1)
    models = registry(tmp_path, lambda _: Uniform())

    async def main() -> None:
        await models.sync()
        first, second = models.acquire("toy"), models.acquire("toy")
        first.release()
        first.release()
        shutil.rmtree(tmp_path / "toy")
        sync = asyncio.ensure_future(models.sync())
        for _ in range(20):
            await asyncio.sleep(0)
        assert states(models, "toy") == {1: (VersionState.UNLOADING, "")}
        assert not sync.done()
        second.release()
        await sync
        assert models.names() == []
        with pytest.raises(ModelNotFound):
            models.acquire("toy")

    asyncio.run(main())
