"""serve.filters against small images whose filtered pixels are worked out by hand below, the
pipeline step that applies them, and a server whose manifest asks for one.

Border: outside pixels mirror the inside without repeating the edge (row -1 is row 1).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from batch.backends import open_backend
from serve.client import Client
from serve.filters import FILTER_FUNCTIONS, apply_filters
from serve.loader import load
from serve.manifest import FILTERS, Preprocessing
from serve.preprocess import preprocess_bytes, preprocess_pixels, scale
from serve.repository import resolve
from tests.images import encode, gray_pixels

# Chosen so that sharpen leaves most values in range, clips one below and one above, and so that
# a mirrored border differs from a repeated one (e.g. at (0, 0): 70 here, 85 with repetition).
IMAGE = [
    [100, 110, 120],
    [105, 100, 95],
    [90, 130, 100],
]
# 5*centre - up - down - left - right, e.g. (0,0): 500 - 105 - 105 - 110 - 110 = 70;
# (2,0): 450 - 105 - 105 - 130 - 130 = -20 -> 0; (2,1): 650 - 100 - 100 - 90 - 100 = 260 -> 255
SHARPENED = [
    [70, 130, 190],
    [135, 60, 55],
    [0, 255, 50],
]
# (corners + 2*sides + 4*centre + 8) // 16, e.g. (0,0): (400 + 860 + 400 + 8) // 16 = 104
BLURRED = [
    [104, 105, 106],
    [105, 106, 106],
    [106, 106, 106],
]
# SHARPENED of BLURRED, e.g. (0,0): 520 - 105 - 105 - 105 - 105 = 100
BLURRED_SHARPENED = [
    [100, 103, 108],
    [103, 108, 106],
    [108, 106, 106],
]


def gray(rows: list) -> np.ndarray:
    return np.asarray(rows, dtype=np.uint8)[:, :, np.newaxis]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("sharpen",), SHARPENED),
        (("blur",), BLURRED),
        (("blur+sharpen",), BLURRED_SHARPENED),
        (("blur", "sharpen"), BLURRED_SHARPENED),  # a list runs in order
        ((), IMAGE),
    ],
)
def test_filters_give_the_pixels_worked_out_by_hand(names: tuple, expected: list) -> None:
    got = apply_filters(gray(IMAGE), names)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, gray(expected))


def test_blur_rounds_halves_up_and_mirrors_the_border() -> None:
    """A single 2 at (1, 1): the centre gets 4*2/16 = 0.5 -> 1; (0, 0) sees the 2 at all four
    corners through the mirror (4*1*2/16 = 0.5 -> 1); (0, 2) sees it at two corners -> 0.25 -> 0."""
    image = np.zeros((4, 4), dtype=np.uint8)
    image[1, 1] = 2
    expected = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(apply_filters(gray(image), ("blur",)), gray(expected))


def step(low: int, high: int, channels: int = 1) -> np.ndarray:
    """5 rows of [low, low, low, high, high, high]."""
    return np.repeat(np.array([[low] * 3 + [high] * 3] * 5, dtype=np.uint8)[..., None], channels, 2)


def test_edges_mark_a_strong_step_once() -> None:
    """0 -> 60: blurred rows [0, 0, 15, 45, 60, 60]; Sobel dx = 4*(right - left) =
    [0, 60, 180, 180, 60, 0]; the first of the two equal maxima survives suppression and is over
    the high threshold 150."""
    expected = np.array([[0, 0, 255, 0, 0, 0]] * 5, dtype=np.uint8)
    np.testing.assert_array_equal(apply_filters(step(0, 60), ("edges",))[..., 0], expected)


def test_edges_ignore_a_step_between_the_thresholds() -> None:
    """0 -> 30: blurred [0, 0, 8, 23, 30, 30], the largest gradient 4*23 = 92 is over the low
    threshold 50 but nothing reaches 150, so hysteresis keeps nothing."""
    assert not apply_filters(step(0, 30), ("edges",)).any()


def test_edges_of_a_colour_image_take_the_strongest_channel_into_every_channel() -> None:
    image = np.zeros((5, 6, 3), dtype=np.uint8)
    image[..., 1] = step(0, 60)[..., 0]  # the step is in green only
    got = apply_filters(image, ("edges",))
    expected = np.array([[0, 0, 255, 0, 0, 0]] * 5, dtype=np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(got[..., channel], expected)


def test_a_batch_is_filtered_image_by_image() -> None:
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    for name in FILTERS:
        got = apply_filters(batch, (name,))
        for index in range(len(batch)):
            np.testing.assert_array_equal(got[index], apply_filters(batch[index], (name,)))


def test_every_manifest_filter_has_an_implementation() -> None:
    assert tuple(FILTER_FUNCTIONS) == FILTERS


def test_filters_refuse_pixels_that_are_not_uint8_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        apply_filters(np.zeros((3, 3, 1), dtype=np.float32), ("sharpen",))


def test_the_pipeline_filters_after_resizing_and_before_scaling() -> None:
    """A 3x3 image stretched to 3x3 by nearest (unchanged), sharpened, then * 2/255 - 1."""
    pre = Preprocessing(
        "grayscale", (3, 3), interpolation="nearest", scale=2 / 255, offset=-1.0,
        filters=("sharpen",),
    )  # fmt: skip
    expected = gray(SHARPENED).astype(np.float64) * 2 / 255 - 1.0
    np.testing.assert_allclose(
        preprocess_bytes(encode(gray(IMAGE)[..., 0]), pre), expected, atol=1e-6
    )
    np.testing.assert_allclose(preprocess_pixels(gray(IMAGE), pre), expected, atol=1e-6)
    # a whole uint8 batch at the model's size goes straight to scale(): still filtered
    np.testing.assert_allclose(scale(gray(IMAGE)[np.newaxis], pre)[0], expected, atol=1e-6)


def test_resizing_comes_before_the_filter() -> None:
    """A 2x2 image stretched (nearest) to 4x4 first, then sharpened: the 4x4 is what is
    filtered. [[10, 20], [30, 40]] -> rows [10,10,20,20] x2, [30,30,40,40] x2; sharpened e.g.
    (0,0): 50 - 10 - 10 - 10 - 10 = 10; (1,1): 50 - 10 - 30 - 10 - 20 = -20 -> 0;
    (2,2): 200 - 20 - 40 - 30 - 40 = 70; (3,0): 150 - 30 - 30 - 30 - 30 = 30."""
    pre = Preprocessing(
        "grayscale", (4, 4), interpolation="nearest", scale=1.0, filters=("sharpen",)
    )
    got = preprocess_bytes(encode(np.array([[10, 20], [30, 40]], dtype=np.uint8)), pre)
    expected = [[10, 0, 30, 20], [0, 0, 10, 0], [50, 40, 70, 60], [30, 20, 50, 40]]
    np.testing.assert_array_equal(got[..., 0], np.asarray(expected, dtype=np.float32))


def test_a_server_with_a_filtered_manifest_answers_with_filtered_inputs(
    model_repository: Path, tmp_path: Path, start_server
) -> None:
    """gray/1's weights under a manifest that asks for sharpen: the server's probabilities are
    the model's on the sharpened input, for files and for raw pixels at the model's size, and
    differ from the unfiltered ones (so the filter demonstrably ran)."""
    shutil.copytree(model_repository / "gray", tmp_path / "gray")
    manifest_path = tmp_path / "gray" / "1" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["preprocessing"]["filters"] = ["sharpen"]
    manifest_path.write_text(json.dumps(data))
    version = resolve(tmp_path, "gray")
    pre = version.manifest.preprocessing
    assert pre.filters == ("sharpen",)
    local = load(version)
    rng = np.random.default_rng(11)
    pixels = [gray_pixels(label, rng) for label in ("dark", "light", "dark")]
    expected = local.predict(np.stack([preprocess_pixels(p, pre) for p in pixels]))
    plain = replace(pre, filters=())
    unfiltered = local.predict(np.stack([preprocess_pixels(p, plain) for p in pixels]))
    assert np.abs(expected - unfiltered).max() > 1e-4, "the filter must change the answer"

    server = start_server(tmp_path)
    with Client(server.target) as client:
        client.wait_ready(60)
        for inputs in ([encode(p) for p in pixels], pixels):
            result = client.classify("gray", inputs)
            got = np.stack([p.probabilities for p in result.predictions])
            np.testing.assert_allclose(got, expected, atol=1e-5)
        # clients that preprocess on their side (clfbatch --server) learn the filters from GetModel
        assert client.get_model("gray").versions[0].preprocessing.filters == ("sharpen",)
    remote = open_backend("gray", server=server.target)
    try:
        assert remote.preprocessing.filters == ("sharpen",)
    finally:
        remote.close()
