"""Compile and fit a Keras model: tf.data pipeline, augmentation, schedule, early stopping and
best-weights checkpointing on a validation split held out of train."""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.data import Split
from training.tasks import Augment


@dataclass(frozen=True)
class FitOptions:
    epochs: int
    batch_size: int
    learning_rate: float
    schedule: str
    label_smoothing: float
    weight_decay: float
    patience: int
    augment: Augment
    seed: int
    verbose: int | None = None  # None: a progress bar on a terminal, one line per epoch otherwise


def augmenter(augment: Augment, seed: int) -> keras.Sequential | None:
    if not augment.any:
        return None
    stack: list[keras.layers.Layer] = []
    # one layer per axis: Keras' "horizontal_and_vertical" draws one coin for both axes, so it
    # only ever produces the 180-degree turn, never a single mirror
    if augment.flip:
        stack.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augment.vertical_flip:
        stack.append(keras.layers.RandomFlip("vertical", seed=seed + 1))
    if augment.rotation:
        stack.append(keras.layers.RandomRotation(augment.rotation, fill_mode="nearest", seed=seed))
    if augment.zoom:
        stack.append(keras.layers.RandomZoom(augment.zoom, fill_mode="nearest", seed=seed))
    if augment.shift:
        stack.append(
            keras.layers.RandomTranslation(
                augment.shift, augment.shift, fill_mode="reflect", seed=seed
            )
        )
    return keras.Sequential(stack, name="augment")


def dataset(split: Split, batch: int, *, shuffle: bool, seed: int, aug: keras.Sequential | None):
    data = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    if shuffle:
        data = data.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch)
    if aug is not None:
        data = data.map(
            lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return data.prefetch(tf.data.AUTOTUNE)


def optimizer(options: FitOptions, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = options.learning_rate
    if options.schedule == "cosine":
        total = max(1, options.epochs * steps_per_epoch)
        warmup = min(total // 10, 3 * steps_per_epoch)
        rate = keras.optimizers.schedules.CosineDecay(
            options.learning_rate / 10,
            total - warmup,
            alpha=0.01,
            warmup_target=options.learning_rate,
            warmup_steps=warmup,
        )
    if options.weight_decay:
        return keras.optimizers.AdamW(rate, weight_decay=options.weight_decay)
    return keras.optimizers.Adam(rate)


def sparse_smoothed_loss(n_classes: int, smoothing: float):
    if not smoothing:
        return keras.losses.SparseCategoricalCrossentropy()
    inner = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        one_hot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), n_classes)
        return inner(one_hot, y_pred)

    return loss


def fit(
    model: keras.Model, train: Split, val: Split, options: FitOptions
) -> dict[str, list[float]]:
    """Early stopping on val_loss; the weights of the best val_accuracy epoch are kept."""
    steps = math.ceil(len(train.labels) / options.batch_size)
    model.compile(
        optimizer=optimizer(options, steps),
        loss=sparse_smoothed_loss(len(train.classes), options.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    aug = augmenter(options.augment, options.seed)
    train_data = dataset(train, options.batch_size, shuffle=True, seed=options.seed, aug=aug)
    val_data = dataset(val, 256, shuffle=False, seed=options.seed, aug=None)
    verbose = options.verbose if options.verbose is not None else (1 if sys.stdout.isatty() else 2)
    with tempfile.TemporaryDirectory(prefix="clf-ckpt-") as scratch:
        best = Path(scratch) / "best.weights.h5"
        callbacks = [
            keras.callbacks.ModelCheckpoint(
                str(best),
                monitor="val_accuracy",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
            ),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=options.patience),
        ]
        history = model.fit(
            train_data,
            validation_data=val_data,
            epochs=options.epochs,
            callbacks=callbacks,
            verbose=verbose,
        )
        if best.exists():
            model.load_weights(str(best))
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def predict(function, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the exported computation over an array in batches."""
    outputs = [
        np.asarray(function(tf.constant(images[start : start + batch])))
        for start in range(0, len(images), batch)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
