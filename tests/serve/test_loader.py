"""The TensorFlow loader's edge paths: a recorded embedding the SavedModel lacks, and
`keras_model` on an export that tracks the whole Keras model (its optimizer slots included)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from serve.embedding import EmbeddingNotFound
from serve.loader import SavedModelClassifier, _saved_variables, keras_model
from serve.manifest import Manifest, Preprocessing
from serve.manifest_entries import Embedding
from serve.repository import MANIFEST_FILE, read_version
from tests.serve.test_runtime import CLASSES, make_version


def test_an_embedding_the_saved_model_lacks_is_not_found(tmp_path: Path) -> None:
    version = make_version(tmp_path)
    recorded = replace(version.manifest, embedding=Embedding("no_such_signature", dimension=4))
    classifier = SavedModelClassifier(str(version.path), recorded)
    with pytest.raises(EmbeddingNotFound, match=f"scripts/convert.py {version.path}"):
        classifier.embed(np.zeros((1, 12, 12, 1), np.float32))


def test_keras_model_reads_a_tracked_keras_export_and_refuses_another_architecture(
    tmp_path: Path,
) -> None:
    """A SavedModel tracking the trained Keras model reaches each weight more than once (the
    model, its layers, the optimizer's slots); each is read once, by name."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(len(CLASSES), activation="softmax")])  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy")
    images = np.random.default_rng(0).random((4, 4, 4, 1), dtype=np.float32)
    model.fit(images, np.array([0, 1, 2, 0]), verbose=0)  # creates the optimizer's slots
    path = tmp_path / "tiny" / "1"
    module = tf.Module()
    module.model = model
    serve = tf.function(model, input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32)])
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    Manifest("tiny", 1, CLASSES, Preprocessing("grayscale", (4, 4))).write(path / MANIFEST_FILE)
    (path / "model.json").write_text(model.to_json())
    version = read_version("tiny", 1, path)
    found = _saved_variables(tf.saved_model.load(str(path)))
    assert len({id(v) for v in found}) == len(found) > len(model.weights)  # slots, each once
    rebuilt = keras_model(version)
    np.testing.assert_allclose(rebuilt(images), model(images), atol=1e-6)
    architecture = model.to_json()
    assert architecture.count('"units": 3') == 1
    (path / "model.json").write_text(architecture.replace('"units": 3', '"units": 5'))
    with pytest.raises(ValueError, match=r"no saved weight fits dense\w*/kernel \(16, 5\)"):
        keras_model(version)
