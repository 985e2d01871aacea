"""Training-time augmentation: each flip setting mirrors along the axes it names, and no other."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from training.fit import augmenter
from training.pipeline import brighten, cut_out
from training.recipe import Augment


def _mirrors_seen(augment: Augment) -> set[str]:
    image = np.arange(4 * 6, dtype=np.float32).reshape(1, 4, 6, 1)  # no symmetry at all
    batch = np.repeat(image, 64, axis=0)
    out = np.asarray(augmenter(augment, seed=1)(batch, training=True))
    views = {
        "none": image[0],
        "horizontal": image[0, :, ::-1],
        "vertical": image[0, ::-1, :],
        "both": image[0, ::-1, ::-1],
    }
    seen = set()
    for sample in out:
        names = [name for name, view in views.items() if np.array_equal(sample, view)]
        assert names, "an augmented image is not a mirror of the original"
        seen.update(names)
    return seen


@pytest.mark.parametrize(
    ("augment", "expected"),
    [
        (Augment(flip=True), {"none", "horizontal"}),
        (Augment(vertical_flip=True), {"none", "vertical"}),
        (Augment(flip=True, vertical_flip=True), {"none", "horizontal", "vertical", "both"}),
    ],
)
def test_flips_mirror_along_the_named_axes_only(augment: Augment, expected: set[str]):
    assert _mirrors_seen(augment) == expected


def test_no_augmentation_builds_no_layer():
    assert augmenter(Augment(), seed=0) is None
    assert Augment(vertical_flip=True).any


def test_brightness_scales_each_image_within_the_range_and_clips() -> None:
    """Each image is multiplied by one factor in [1 - b, 1 + b] (above the range's floor), the
    same factor for all its pixels, and never leaves the range; a replayed seed replays it."""
    batch = np.stack([np.full((3, 3, 3), value, np.float32) for value in (0.1, 0.5, 0.95)] * 20)
    seed = tf.constant([7, 3], tf.int64)
    out = np.asarray(brighten(tf.constant(batch), 0.2, seed, (0.0, 1.0)))
    factors = out[:, 0, 0, 0] / batch[:, 0, 0, 0]
    assert np.all(out == out[:, :1, :1, :1])  # one factor per image
    dim = batch[:, 0, 0, 0] < 0.8
    assert np.all((factors[dim] >= 0.8 - 1e-6) & (factors[dim] <= 1.2 + 1e-6))
    assert len(np.unique(np.round(factors[dim], 5))) > 10  # drawn, not fixed
    assert out.max() <= 1.0 and out.min() >= 0.0
    assert np.any(out[~dim] == 1.0)  # 0.95 scaled past 1 is clipped to the range's top
    np.testing.assert_array_equal(out, brighten(tf.constant(batch), 0.2, seed, (0.0, 1.0)))


def test_cutout_fills_one_square_per_image_with_the_fill_value() -> None:
    """Each image gets one square of the fill value, whole or cut by an edge, at a drawn place;
    everything else is untouched; a replayed seed replays it."""
    batch = np.ones((200, 8, 8, 2), np.float32)
    seed = tf.constant([5, 1], tf.int64)
    fill = np.array([0.25, 0.75], np.float32)
    out = np.asarray(cut_out(tf.constant(batch), 4, seed, fill))
    cut = np.all(out == fill, axis=-1)
    assert np.all(cut | np.all(out == 1.0, axis=-1))  # a pixel is either cut or untouched
    areas = cut.sum(axis=(1, 2))
    assert areas.max() == 16 and 0 < areas.min() < 16  # whole squares and edge-cut ones
    corners = set()
    for mask in cut:
        rows, cols = np.nonzero(mask)
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a box
        assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4
        corners.add((rows.min(), cols.min()))
    assert len(corners) > 20  # drawn anywhere, not one place
    np.testing.assert_array_equal(out, cut_out(tf.constant(batch), 4, seed, fill))
