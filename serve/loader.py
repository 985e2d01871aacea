"""Load a SavedModel version as a `Classifier`. The only serving module that calls TensorFlow
(`serve.artefacts` imports it too, to convert a SavedModel for LiteRT).

classifier = load(version)                   # a ModelVersion from serve.repository
classifier = load(version, runtime="auto")   # LiteRT where it is faster (serve.runtime)
probs = classifier.predict(batch)            # float32 [N, H, W, C] -> float32 [N, classes]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np

from serve.manifest import Manifest
from serve.repository import ModelVersion

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Classifier(Protocol):
    """What serving and batch need of a model: its labels and a batch predict."""

    labels: tuple[str, ...]
    input_shape: tuple[int, int, int]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, H, W, C] -> softmax probabilities float32 [N, len(labels)]."""
        ...


class SavedModelClassifier:
    """A TF SavedModel's serving signature, called directly (no Keras, no `model.predict`)."""

    def __init__(self, path: str, manifest: Manifest) -> None:
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(path)
        signature = manifest.signature
        self._function = self._loaded.signatures[signature.name]
        self._input = signature.input
        self._output = signature.output
        self.labels = manifest.classes
        self.input_shape = manifest.input_shape

    def predict(self, batch: np.ndarray) -> np.ndarray:
        tensor = self._tf.constant(np.ascontiguousarray(batch, dtype=np.float32))
        outputs = self._function(**{self._input: tensor})
        return np.asarray(outputs[self._output].numpy(), dtype=np.float32)

    def warm_up(self) -> None:
        """Run one inference so the first real request does not pay for graph tracing."""
        self.predict(np.zeros((1, *self.input_shape), dtype=np.float32))


def load(
    version: ModelVersion, runtime: str = "tensorflow", max_batch: int | None = None
) -> Classifier:
    """Load and warm one version on `runtime` ("tensorflow", "litert" or "auto"); `auto`
    compares the runtimes up to `max_batch` images (default 256).

    Raises whatever TensorFlow raises for a broken SavedModel; a runtime that cannot serve the
    version leaves it on TensorFlow (see `serve.runtime`).
    """
    classifier = SavedModelClassifier(str(version.path), version.manifest)
    classifier.warm_up()
    if runtime == "tensorflow":
        return classifier
    from serve.runtime import with_runtime

    return with_runtime(version, classifier, runtime, max_batch)


def loader_for(runtime: str, max_batch: int | None = None) -> Callable[[ModelVersion], Classifier]:
    """`load` bound to one runtime, for `serve.registry.ModelRegistry(loader=...)`."""
    return functools.partial(load, runtime=runtime, max_batch=max_batch)
