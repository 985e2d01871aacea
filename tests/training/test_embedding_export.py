"""The `embedding` signature: written by training's export, added to older versions by
scripts/convert.py, equal to the penultimate layer computed in Keras."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from training import export
from training.architectures import mnist_tutorial_004, tiny_cnn

from serve.manifest import Manifest, Preprocessing
from serve.repository import read_version
from tests.conftest import REPO_ROOT

HISTORY = {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.0], "val_accuracy": [0.5]}


def _manifest() -> Manifest:
    return Manifest("toy", 0, ("a", "b", "c"), Preprocessing("grayscale", (28, 28)), "tiny")


def _penultimate(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The input of the last layer (the softmax Dense), by a Keras sub-model."""
    sub = keras.Model(model.inputs[0], model.layers[-1].input)
    return np.asarray(sub(images, training=False))


def _embed(path: Path, images: np.ndarray) -> np.ndarray:
    function = tf.saved_model.load(str(path)).signatures["embedding"]
    return function(images=tf.constant(images))["embedding"].numpy()


def _images(count: int = 5) -> np.ndarray:
    return np.random.default_rng(3).random((count, 28, 28, 1), dtype=np.float32)


@pytest.mark.parametrize("build", [tiny_cnn, mnist_tutorial_004], ids=["pooling", "dropout"])
def test_export_writes_the_embedding_signature(tmp_path: Path, build):
    model = build((28, 28, 1), 3)
    path, manifest = export.write_version(tmp_path, model, _manifest(), HISTORY, tta_flip=True)
    images = _images()
    expected = _penultimate(model, images)
    assert manifest.embedding is not None
    assert manifest.embedding.dimension == expected.shape[1]
    assert Manifest.read(path / "manifest.json").embedding == manifest.embedding
    np.testing.assert_allclose(_embed(path, images), expected, atol=1e-6)
    # One copy of the weights serves both signatures.
    assert len(tf.saved_model.load(str(path)).weights) == len(model.weights)


def _without_embedding(version: Path) -> None:
    """Make `version` look exported before the signature existed: serving_default only."""
    loaded = tf.saved_model.load(str(version))
    old = version.parent / f".old-{version.name}"
    tf.saved_model.save(loaded, str(old), signatures={"serving_default": loaded.signatures[
        "serving_default"]})  # fmt: skip
    for name in ("saved_model.pb", "variables", "fingerprint.pb"):
        target = version / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        (old / name).rename(target)
    shutil.rmtree(old)
    data = json.loads((version / "manifest.json").read_text())
    del data["embedding"]
    (version / "manifest.json").write_text(json.dumps(data))
    assert "embedding" not in tf.saved_model.load(str(version)).signatures


def test_convert_adds_the_signature_to_an_older_version(tmp_path: Path):
    model = mnist_tutorial_004((28, 28, 1), 3)
    path, _ = export.write_version(tmp_path, model, _manifest(), HISTORY, tta_flip=False)
    _without_embedding(path)
    images = _images()
    probabilities = (
        tf.saved_model.load(str(path))
        .signatures["serving_default"](images=tf.constant(images))["probabilities"]
        .numpy()
    )
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "convert.py"), str(path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    layer = model.layers[-2].name  # the Dropout before the softmax Dense
    assert f"embedding signature added (128 floats from layer {layer!r})" in done.stdout
    manifest = read_version("toy", 1, path).manifest
    assert manifest.embedding is not None and manifest.embedding.dimension == 128
    np.testing.assert_allclose(_embed(path, images), _penultimate(model, images), atol=1e-6)
    after = (
        tf.saved_model.load(str(path))
        .signatures["serving_default"](images=tf.constant(images))["probabilities"]
        .numpy()
    )
    np.testing.assert_allclose(after, probabilities, atol=1e-7)
    # The LiteRT artefact was converted again from the new SavedModel (else it would be stale).
    from serve.artefacts import LITERT, saved_model_digest

    assert manifest.artefacts[LITERT].source_sha256 == saved_model_digest(path)
    again = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "convert.py"), str(path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0 and "embedding signature added" not in again.stdout
