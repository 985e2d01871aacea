"""Write a trained model as a new numbered version, atomically.

Everything goes into `<repository>/<task>/.tmp-<random>/` first; the directory is renamed to
the next free integer only once complete, so a reader never sees half a version, a failed run
leaves nothing behind, and an existing version is never overwritten.
"""

from __future__ import annotations

import csv
import errno
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import keras
import tensorflow as tf

from batch.plots import plot_curves
from serve.artefacts import with_litert
from serve.manifest import Manifest
from serve.manifest_entries import Embedding
from serve.repository import version_dirs

log = logging.getLogger(__name__)


class RepositoryError(OSError):
    """The repository path cannot hold a new version (not a directory, not writable)."""


def check_writable(repository: Path) -> None:
    """Fail early, before any training, if no version could be written."""
    probe = repository
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise RepositoryError(f"repository {repository} is not a writable directory")


def serving_function(model: keras.Model, tta_flip: bool) -> Callable[[tf.Tensor], tf.Tensor]:
    """The exported computation: softmax probabilities, averaged with the mirror image if asked."""

    def probabilities(images: tf.Tensor) -> tf.Tensor:
        probs = model(images, training=False)
        if tta_flip:
            probs = (probs + model(tf.reverse(images, axis=[2]), training=False)) / 2.0
        return probs

    return probabilities


def embedding_model(model: keras.Model) -> tuple[keras.Model, str]:
    """A Keras model sharing `model`'s layers whose output is the input of its last Dense layer
    (the penultimate vector the classifier's head reads), and the name of the layer producing it.

    Raises ValueError for a model without a Dense layer.
    """
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(f"{model.name} has no Dense layer: no penultimate vector to export")
    head = dense[-1]
    features = head.input
    producer = features._keras_history.operation  # the layer whose output feeds the head
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, features, name=f"{model.name}_embedding"), producer.name


def save_saved_model(
    model: keras.Model, path: Path, manifest: Manifest, tta_flip: bool
) -> Manifest:
    """A plain TF SavedModel, loadable without Keras (and by TF Serving), with two signatures:
    `serving_default` (probabilities) and `embedding` (the penultimate vector, float32 [N, d],
    of the image as given, never averaged with its mirror). Returns `manifest` with the
    embedding recorded.

    Only the model's weights are tracked, once: both signatures read the same variables, so the
    second costs graph, not weights. Tracking the Keras model would also save its optimizer's
    slots (Adam's two moments, twice the weights again), and Keras' ExportArchive stored every
    weight twice.
    """
    signature = manifest.signature
    spec = tf.TensorSpec([None, *manifest.input_shape], tf.float32, name=signature.input)
    compute = serving_function(model, tta_flip)
    features, layer = embedding_model(model)
    dimension = math.prod(int(d) for d in features.outputs[0].shape[1:])
    entry = Embedding(dimension=dimension, layer=layer)

    @tf.function(input_signature=[spec])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {signature.output: compute(images)}

    @tf.function(input_signature=[spec])
    def embed(images: tf.Tensor) -> dict[str, tf.Tensor]:
        vectors = features(images, training=False)
        return {entry.output: tf.cast(tf.reshape(vectors, [tf.shape(images)[0], -1]), tf.float32)}

    module = tf.Module()
    module.weights = [variable.value for variable in model.weights]  # the tf.Variables
    module.serve = serve
    module.embed = embed
    tf.saved_model.save(
        module, str(path), signatures={signature.name: serve, entry.signature: embed}
    )
    return replace(manifest, embedding=entry)


def add_runtime_artefacts(version_dir: Path, manifest: Manifest) -> Manifest:
    """Write `model.tflite` beside the SavedModel and record it; on failure the version ships
    without it (the server then converts on load) and one warning says why."""
    try:
        return with_litert(version_dir, manifest)
    except Exception as exc:  # the converter raises many types; the SavedModel is what counts
        log.warning("no LiteRT artefact for %s: %s", manifest.task, str(exc)[:300])
        return manifest


def write_history(history: Mapping[str, Sequence[float]], path: Path) -> None:
    keys = list(history)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history[keys[0]]) if keys else 0):
            writer.writerow([epoch + 1, *(f"{history[k][epoch]:.6f}" for k in keys)])


def next_version(task_dir: Path) -> int:
    existing = version_dirs(task_dir)
    return existing[-1][0] + 1 if existing else 1


def publish(staging: Path, task_dir: Path, manifest: Manifest) -> Manifest:
    """Rename the staging directory to the next free version; retry if another run took it."""
    for _ in range(100):
        numbered = replace(manifest, version=next_version(task_dir))
        numbered.write(staging / "manifest.json")
        target = task_dir / str(numbered.version)
        try:
            os.rename(staging, target)  # atomic; fails if target exists and is not empty
            return numbered
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    raise RepositoryError(f"could not find a free version number in {task_dir}")


def write_version(
    repository: Path,
    model: keras.Model,
    manifest: Manifest,
    history: Mapping[str, Sequence[float]],
    *,
    tta_flip: bool,
) -> tuple[Path, Manifest]:
    """Write SavedModel, model.tflite, model.json, manifest, curves and history; returns the
    version path."""
    task_dir = repository / manifest.task
    try:
        task_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepositoryError(f"cannot create {task_dir}: {exc}") from exc
    staging = task_dir / f".tmp-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        manifest = save_saved_model(model, staging, manifest, tta_flip)
        manifest = add_runtime_artefacts(staging, manifest)
        (staging / "model.json").write_text(model.to_json(indent=2) + "\n")
        write_history(history, staging / "history.csv")
        plot_curves(history, staging / "curves.png")
        published = publish(staging, task_dir, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return task_dir / str(published.version), published
