"""Training-time augmentation: each flip setting mirrors along the axes it names, and no other."""

from __future__ import annotations

import numpy as np
import pytest
from training.fit import augmenter
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
