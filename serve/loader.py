"""Load a SavedModel version as a `Classifier`. The only serving module that calls TensorFlow
(`serve.artefacts` imports it too, to convert a SavedModel for LiteRT).

classifier = load(version)                   # a ModelVersion from serve.repository
classifier = load(version, runtime="auto")   # LiteRT where it is faster (serve.runtime)
probs = classifier.predict(batch)            # float32 [N, H, W, C] -> float32 [N, classes]
vectors = classifier.embed(batch)            # TensorFlow: float32 [N, manifest.embedding.dimension]
model = keras_model(version)                 # model.json + the SavedModel's weights, in Keras
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from serve.embedding import EmbeddingNotFound
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
        self._path, self._manifest = path, manifest
        embedding = manifest.embedding
        self._embed = None
        if embedding is not None and embedding.signature in self._loaded.signatures:
            self._embed = self._loaded.signatures[embedding.signature]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        tensor = self._tf.constant(np.ascontiguousarray(batch, dtype=np.float32))
        outputs = self._function(**{self._input: tensor})
        return np.asarray(outputs[self._output].numpy(), dtype=np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, H, W, C] -> the penultimate layer's vectors, float32 [N, dimension].

        Raises EmbeddingNotFound for a version exported without the `embedding` signature."""
        embedding = self._manifest.embedding
        if self._embed is None or embedding is None:
            raise EmbeddingNotFound(self._manifest.task, self._manifest.version, self._path)
        tensor = self._tf.constant(np.ascontiguousarray(batch, dtype=np.float32))
        outputs = self._embed(**{self._input: tensor})
        return np.asarray(outputs[embedding.output].numpy(), dtype=np.float32)

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


def _saved_variables(root: Any) -> list[Any]:
    """Every tf.Variable reachable from a loaded SavedModel object, depth first, each once."""
    import tensorflow as tf

    found: list[Any] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, tf.Variable):
            found.append(item)
        elif hasattr(item, "_trackable_children"):  # pragma: no branch - children are Trackable
            try:
                children = list(item._trackable_children().values())
            # A restored function or asset with nothing to track; none of the exports we read
            # (ours, Keras ExportArchive, a tracked Keras model) has one.
            except Exception:  # pragma: no cover - no export style we read raises here
                continue
            stack.extend(reversed(children))
    return found


def keras_model(version: ModelVersion) -> Any:
    """The version as a Keras model: its architecture from `model.json`, its weights read from
    the SavedModel's variables by name (`conv2d/kernel`, also under the model's name).

    Every export style of this project works: ours (`weights` tracked once), Keras'
    ExportArchive (every weight twice, plus RNG states) and a tracked Keras model (with its
    optimizer's slots, which are skipped). Raises FileNotFoundError without model.json,
    ValueError if a weight is missing or does not fit.
    """
    import keras
    import tensorflow as tf

    architecture = json.loads((version.path / "model.json").read_text())
    architecture.pop("compile_config", None)  # a custom loss need not be importable here
    model = keras.models.model_from_json(json.dumps(architecture))
    by_name: dict[str, Any] = {}
    for variable in _saved_variables(tf.saved_model.load(str(version.path))):
        by_name.setdefault(variable.name.split(":")[0], variable)
    weights = []
    for weight in model.weights:
        saved = by_name.get(weight.path, by_name.get(f"{model.name}/{weight.path}"))
        if saved is None or tuple(saved.shape) != tuple(weight.shape):
            raise ValueError(f"{version.path}: no saved weight fits {weight.path} {weight.shape}")
        weights.append(saved.numpy())
    model.set_weights(weights)
    return model


def loader_for(runtime: str, max_batch: int | None = None) -> Callable[[ModelVersion], Classifier]:
    """`load` bound to one runtime, for `serve.registry.ModelRegistry(loader=...)`."""
    return functools.partial(load, runtime=runtime, max_batch=max_batch)
