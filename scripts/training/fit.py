"""Compile and fit a Keras model: resumable batches, augmentation, optimizer and schedule,
early stopping and best-weights selection on a validation split held out of train, and a
checkpoint after every epoch (see `training.checkpoint`)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.checkpoint import EpochCheckpoint
from training.data import Split
from training.fastnet import BiasScaledSGD, Triangular
from training.pipeline import augmenter, eval_batches, train_batches
from training.recipe import Augment, Nesterov

__all__ = ["FitOptions", "augmenter", "fit", "predict"]


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
    checkpoint_dir: Path
    resume: bool = False  # continue from the checkpoint in `checkpoint_dir` if there is one
    sgd: Nesterov | None = None  # None: Adam (AdamW with weight decay)
    keep_best: bool = True  # end with the best-val_accuracy epoch's weights, not the last
    verbose: int | None = None  # None: a progress bar on a terminal, one line per epoch otherwise


def optimizer(options: FitOptions, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = options.learning_rate
    total = max(1, options.epochs * steps_per_epoch)
    if options.schedule == "cosine":
        warmup = min(total // 10, 3 * steps_per_epoch)
        rate = keras.optimizers.schedules.CosineDecay(
            options.learning_rate / 10,
            total - warmup,
            alpha=0.01,
            warmup_target=options.learning_rate,
            warmup_steps=warmup,
        )
    elif options.schedule == "triangular":
        rate = Triangular(options.learning_rate, total)
    if options.sgd is not None:
        sgd = options.sgd
        return BiasScaledSGD(
            rate,
            momentum=sgd.momentum,
            nesterov=True,
            weight_decay=options.weight_decay or None,
            bias_lr_scale=sgd.bias_lr_scale,
            use_ema=bool(sgd.lookahead_every),
            ema_momentum=sgd.lookahead_momentum,
            ema_overwrite_frequency=sgd.lookahead_every or None,
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
) -> tuple[dict[str, list[float]], int]:
    """Train to `options.epochs` or early stopping on val_loss. Returns the per-epoch history
    (with `seconds` per epoch) across interruptions, and how many epochs a resume skipped."""
    steps = math.ceil(len(train.labels) / options.batch_size)
    model.compile(
        optimizer=optimizer(options, steps),
        loss=sparse_smoothed_loss(len(train.classes), options.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    checkpoint = EpochCheckpoint(options.checkpoint_dir, options.patience)
    if options.resume and checkpoint.restore(model):
        print(f"resuming after epoch {checkpoint.epochs_done} from {checkpoint.directory}")
    else:
        checkpoint.start_fresh()
    first = checkpoint.epochs_done
    if first < options.epochs and not checkpoint.stopped_early():
        epochs = range(first, options.epochs)
        verbose = (
            options.verbose if options.verbose is not None else (1 if sys.stdout.isatty() else 2)
        )
        model.fit(
            train_batches(
                train, options.batch_size, seed=options.seed, epochs=epochs, augment=options.augment
            ),
            validation_data=eval_batches(val),
            initial_epoch=first,
            epochs=options.epochs,
            steps_per_epoch=steps,
            callbacks=[checkpoint],
            shuffle=False,  # the batches are already in their (seed, epoch) order
            verbose=verbose,
        )
    elif isinstance(model.optimizer, keras.optimizers.Optimizer):
        model.optimizer.finalize_variable_values(model.trainable_variables)
    if options.keep_best and checkpoint.best_weights.exists():
        model.load_weights(str(checkpoint.best_weights))
    return {**checkpoint.history, "seconds": checkpoint.epoch_seconds}, first


def predict(function, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the exported computation over an array in batches."""
    outputs = [
        np.asarray(function(tf.constant(images[start : start + batch])))
        for start in range(0, len(images), batch)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
