"""Training batches whose order depends only on (seed, epoch), so a resumed run sees the batches
an uninterrupted one would have; and the augmentations applied to them.

    data = train_batches(split, 128, seed=42, epochs=range(3, 10), augment=Augment(flip=True))
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from training.data import Split
from training.recipe import Augment


def augmenter(augment: Augment, seed: int) -> keras.Sequential | None:
    """Keras' random layers for the ImageDataGenerator-style augmentations (not resumable to the
    bit: their random state restarts with the process, which changes the draws, not the recipe)."""
    stack: list[keras.layers.Layer] = []
    # one layer per axis: Keras' "horizontal_and_vertical" draws one coin for both axes, so it
    # only ever produces the 180-degree turn, never a single mirror
    if augment.flip and not augment.alternate_flip:
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
    return keras.Sequential(stack, name="augment") if stack else None


def translate(images: tf.Tensor, pixels: int, seed: tf.Tensor) -> tf.Tensor:
    """Shift each image by a whole number of pixels in [-pixels, pixels] on both axes, filling
    with its reflection (no interpolation blur, unlike Keras' RandomTranslation)."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed, minval=0, maxval=2 * pixels + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def brighten(
    images: tf.Tensor, amount: float, seed: tf.Tensor, value_range: tuple[float, float]
) -> tf.Tensor:
    """Scale each image's values above the range's floor by a factor drawn from
    [1 - amount, 1 + amount], clipped to the range (a lamp or exposure change)."""
    low, high = value_range
    factors = tf.random.stateless_uniform(
        [tf.shape(images)[0], 1, 1, 1], seed, minval=1 - amount, maxval=1 + amount
    )
    return tf.clip_by_value((images - low) * factors + low, low, high)


def cut_out(images: tf.Tensor, size: int, seed: tf.Tensor, fill: tf.Tensor) -> tf.Tensor:
    """Set one `size`x`size` square per image to `fill` (per channel), its centre drawn anywhere in
    the image so that squares at the edges are partly outside it (DeVries and Taylor's cutout)."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    centres = tf.random.stateless_uniform([batch, 2], seed, minval=0, maxval=1)
    tops = tf.cast(centres[:, 0] * tf.cast(height, tf.float32), tf.int32) - size // 2
    lefts = tf.cast(centres[:, 1] * tf.cast(width, tf.float32), tf.int32) - size // 2
    rows = tf.range(height)[None, :] - tops[:, None]
    cols = tf.range(width)[None, :] - lefts[:, None]
    in_rows = (rows >= 0) & (rows < size)
    in_cols = (cols >= 0) & (cols < size)
    square = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]
    return tf.where(square, tf.cast(fill, images.dtype), images)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def alternating_flips(n: int, seed: int, epoch: int) -> np.ndarray:
    """A random half of the images mirrored in even epochs, the other half in odd ones: every
    image is seen both ways every two epochs, less repetitive than a coin per epoch."""
    base = np.random.default_rng([seed, 1_000_003]).random(n) < 0.5
    return base ^ bool(epoch % 2)


def train_batches(
    split: Split, batch: int, *, seed: int, epochs: range, augment: Augment
) -> tf.data.Dataset:
    """Every batch of `epochs` (a range: a resumed run starts it later), then augmented."""
    n = len(split.labels)
    height, width, channels = split.images.shape[1:]

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for epoch in epochs:
            order = epoch_order(n, seed, epoch)
            flips = alternating_flips(n, seed, epoch) if augment.alternate_flip else None
            for step, start in enumerate(range(0, n, batch)):
                index = np.sort(order[start : start + batch])  # sorted: a faster gather
                images = split.images[index]
                if flips is not None:
                    images[flips[index]] = images[flips[index], :, ::-1]
                yield images, split.labels[index], np.array([seed, epoch * 100_000 + step])

    data = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec([None, height, width, channels], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([2], tf.int64),
        ),
    )
    aug = augmenter(augment, seed)
    pixels = augment.translate
    value_range = (0.0, 0.0)
    if augment.brightness:
        value_range = (float(split.images.min()), float(split.images.max()))
    brightness_seed = tf.constant([1, 0], tf.int64)  # its own draws, apart from translate's
    cutout_seed = tf.constant([2, 0], tf.int64)
    fill = split.images.mean(axis=(0, 1, 2)) if augment.cutout else np.zeros(channels)

    def apply(images: tf.Tensor, labels: tf.Tensor, step_seed: tf.Tensor):
        if pixels:
            images = translate(images, pixels, step_seed)
        if augment.brightness:
            images = brighten(images, augment.brightness, step_seed + brightness_seed, value_range)
        if augment.cutout:
            images = cut_out(images, augment.cutout, step_seed + cutout_seed, fill)
        if aug is not None:
            images = aug(images, training=True)
        return images, labels

    return data.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def eval_batches(split: Split, batch: int = 256) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((split.images, split.labels)).batch(batch).prefetch(2)
