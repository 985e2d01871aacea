"""serve.prepare edge paths: uint8 batches that need per-image work, preprocessed single images
sent as 4-D arrays, and raw arrays over the pixel limit. Expected tensors are written out by
hand: the model input is `pixel / 255` for the default grayscale preprocessing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from serve.errors import InvalidInput
from serve.manifest import Preprocessing
from serve.prepare import Preparer, TensorBatch, TensorInput, whole_batch

GRAY = Preprocessing("grayscale", (2, 2))


@pytest.fixture
def preparer() -> Iterator[Preparer]:
    prepare = Preparer(decode_threads=1, max_pixels=16)
    yield prepare
    prepare.stop()


def run(preparer: Preparer, inputs: object, busy: bool = False) -> np.ndarray:
    return asyncio.run(preparer(inputs, GRAY, busy))  # type: ignore[arg-type]


def test_uint8_batches_that_are_not_the_model_size_go_image_by_image(preparer: Preparer) -> None:
    float_pixels = TensorBatch(np.full((2, 2, 2), 51.0))  # not uint8
    assert whole_batch(float_pixels, GRAY) is None
    three_channels = TensorBatch(np.full((2, 2, 2, 3), 51, np.uint8))  # the model has one
    assert whole_batch(three_channels, GRAY) is None
    np.testing.assert_allclose(run(preparer, float_pixels), np.full((2, 2, 2, 1), 0.2), atol=1e-6)
    np.testing.assert_allclose(
        run(preparer, three_channels, busy=True), np.full((2, 2, 2, 1), 0.2), atol=1e-6
    )


def test_a_preprocessed_image_may_come_as_a_batch_of_one(preparer: Preparer) -> None:
    one = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1) / 10
    got = run(preparer, [TensorInput(one, preprocessed=True)])
    np.testing.assert_array_equal(got, one)
    with pytest.raises(
        InvalidInput, match=r"a model input must be \[2, 2, 1\], not \[2, 2, 2, 1\]"
    ):
        run(preparer, [TensorInput(np.zeros((2, 2, 2, 1), np.float32), preprocessed=True)])


def test_raw_pixels_over_the_limit_are_refused_with_their_index(preparer: Preparer) -> None:
    small = TensorInput(np.zeros((2, 2), np.uint8))
    huge = TensorInput(np.zeros((5, 4), np.uint8))  # 20 pixels, the limit is 16
    with pytest.raises(InvalidInput, match="4x5 pixels, over 16") as caught:
        run(preparer, [small, huge])
    assert caught.value.index == 1
