"""Version directories appear atomically and are never overwritten."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from training import export
from training.architectures import tiny_cnn

from serve.manifest import Manifest, Preprocessing
from serve.repository import scan

HISTORY = {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.0], "val_accuracy": [0.5]}


def _manifest() -> Manifest:
    return Manifest("toy", 0, ("a", "b"), Preprocessing("grayscale", (8, 8)), architecture="tiny")


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return tiny_cnn((8, 8, 1), 2)


def test_next_free_integer_is_used(tmp_path: Path, model: keras.Model):
    (tmp_path / "toy" / "7").mkdir(parents=True)
    path, manifest = export.write_version(tmp_path, model, _manifest(), HISTORY, tta_flip=False)
    assert path.name == "8" and manifest.version == 8
    assert Manifest.read(path / "manifest.json").version == 8


def test_failure_mid_write_leaves_nothing(
    tmp_path: Path, model: keras.Model, monkeypatch: pytest.MonkeyPatch
):
    def broken_plot(*_: object) -> None:
        raise RuntimeError("disk full while plotting")

    monkeypatch.setattr(export, "plot_curves", broken_plot)
    with pytest.raises(RuntimeError, match="disk full"):
        export.write_version(tmp_path, model, _manifest(), HISTORY, tta_flip=False)
    assert list((tmp_path / "toy").iterdir()) == []
    assert scan(tmp_path) == {}


def test_a_taken_number_is_never_overwritten(
    tmp_path: Path, model: keras.Model, monkeypatch: pytest.MonkeyPatch
):
    """Another run publishing the same number between our choice and our rename."""
    (tmp_path / "toy" / "1").mkdir(parents=True)
    (tmp_path / "toy" / "1" / "theirs").write_text("keep me")
    real = export.next_version
    calls = iter([1])
    monkeypatch.setattr(export, "next_version", lambda d: next(calls, None) or real(d))
    path, _ = export.write_version(tmp_path, model, _manifest(), HISTORY, tta_flip=False)
    assert path.name == "2"
    assert (tmp_path / "toy" / "1" / "theirs").read_text() == "keep me"


def test_test_time_flip_is_baked_into_the_export(tmp_path: Path, model: keras.Model):
    import numpy as np
    import tensorflow as tf

    path, _ = export.write_version(tmp_path, model, _manifest(), HISTORY, tta_flip=True)
    loaded = tf.saved_model.load(str(path)).signatures["serving_default"]
    image = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    flipped = image[:, :, ::-1, :].copy()
    run = lambda x: loaded(images=tf.constant(x))["probabilities"].numpy()  # noqa: E731
    np.testing.assert_allclose(run(image), run(flipped), rtol=1e-5)


def test_export_stores_the_weights_once_and_no_optimizer_state(tmp_path: Path):
    import numpy as np
    import tensorflow as tf

    trained = tiny_cnn((8, 8, 1), 2)
    trained.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    trained.fit(np.zeros((4, 8, 8, 1), np.float32), np.array([0, 1, 0, 1]), verbose=0)
    assert trained.optimizer.variables, "the optimizer should hold slots after a step"

    path, _ = export.write_version(tmp_path, trained, _manifest(), HISTORY, tta_flip=False)
    stored = [
        shape
        for name, shape in tf.train.list_variables(str(path / "variables" / "variables"))
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    ]
    assert sorted(map(tuple, stored)) == sorted(tuple(w.shape) for w in trained.weights)
    image = np.random.default_rng(1).random((2, 8, 8, 1), dtype=np.float32)
    served = tf.saved_model.load(str(path)).signatures["serving_default"]
    np.testing.assert_allclose(
        served(images=tf.constant(image))["probabilities"].numpy(),
        trained(image, training=False).numpy(),
        rtol=1e-6,
    )
