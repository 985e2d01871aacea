"""Request inputs -> the model's float32 [n, H, W, C] batch, in the request path (never on the
batcher), errors naming the input index.

A tensor batch that already has the model's shape (FP32 model input, or UINT8 pixels of the
model's size) is checked and scaled as one array on the event loop: no per-image objects, no
thread hop. Encoded images and pixels that need resizing are decoded per image, on the decode
threads (a lone small image on an idle model stays on the loop: the hop costs more).

    prepare = Preparer(decode_threads=2, max_pixels=40_000_000)
    batch = await prepare(request.inputs, manifest.preprocessing, busy=False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serve.errors import InvalidInput
from serve.manifest import Preprocessing
from serve.preprocess import check_model_input, preprocess_bytes, preprocess_pixels, scale
from serve.thread_pool import WorkerPool

_INLINE_BYTES = 16 * 1024


@dataclass(frozen=True)
class ImageInput:
    """Encoded image bytes; the model's manifest preprocessing is applied."""

    data: bytes


@dataclass(frozen=True)
class TensorInput:
    """An array: raw pixels (0..255, HxW[xC]) or, if `preprocessed`, the model input (HxWxC)."""

    array: np.ndarray
    preprocessed: bool = False


@dataclass(frozen=True)
class TensorBatch:
    """Many inputs as one array: pixels [N, H, W(, C)] or, if `preprocessed`, [N, H, W, C]."""

    array: np.ndarray
    preprocessed: bool = False

    def __len__(self) -> int:
        return len(self.array)


Input = ImageInput | TensorInput
Inputs = Sequence[Input] | TensorBatch


def _first_bad_row(array: np.ndarray) -> int:
    finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    return int(np.argmin(finite))


def whole_batch(batch: TensorBatch, pre: Preprocessing) -> np.ndarray | None:
    """The model input for `batch` computed as one array, or None if it needs per-image work."""
    array = batch.array
    if batch.preprocessed:
        if array.ndim != 4 or tuple(array.shape[1:]) != pre.input_shape:
            shape = list(array.shape[1:])
            raise InvalidInput(
                f"tensor shape {shape} does not match the model input {[-1, *pre.input_shape]}",
                index=0,
            )
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise InvalidInput("tensor contains NaN or Inf", index=_first_bad_row(array))
        return array
    height, width, channels = pre.input_shape
    if array.dtype != np.uint8 or tuple(array.shape[1:3]) != (height, width):
        return None
    if array.ndim == 3 and channels == 1:
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[3] != channels:
        return None
    return scale(array, pre)


class Preparer:
    """Turns a request's inputs into one batch; decodes on its own threads when that pays."""

    def __init__(self, decode_threads: int, max_pixels: int) -> None:
        self._decoders = WorkerPool("decode", decode_threads)
        self._max_pixels = max_pixels

    async def __call__(self, inputs: Inputs, pre: Preprocessing, busy: bool) -> np.ndarray:
        if isinstance(inputs, TensorBatch):
            ready = whole_batch(inputs, pre)
            if ready is not None:
                return ready
            rows: Sequence[Input] = [TensorInput(row) for row in inputs.array]
        else:
            rows = inputs
        if not busy and len(rows) == 1 and _size(rows[0]) <= _INLINE_BYTES:
            return self._preprocess(rows, pre)
        return await self._decoders.run(lambda items: self._preprocess(items, pre), rows)

    def stop(self) -> None:
        self._decoders.stop()

    def _preprocess(self, inputs: Sequence[Input], pre: Preprocessing) -> np.ndarray:
        out = np.empty((len(inputs), *pre.input_shape), dtype=np.float32)
        for index, item in enumerate(inputs):
            try:
                out[index] = self._one(item, pre)
            except InvalidInput as exc:
                message = str(exc) if exc.index is None else str(exc).split(": ", 1)[-1]
                raise InvalidInput(message, index=index) from exc
        return out

    def _one(self, item: Input, pre: Preprocessing) -> np.ndarray:
        if isinstance(item, ImageInput):
            return preprocess_bytes(item.data, pre, max_pixels=self._max_pixels)
        array = item.array
        if item.preprocessed:
            if array.ndim == 4 and array.shape[0] == 1:
                array = array[0]
            if array.ndim != 3:
                raise InvalidInput(
                    f"a model input must be {list(pre.input_shape)}, not {list(array.shape)}"
                )
            return check_model_input(array, pre.input_shape)[0]
        if array.ndim >= 2 and array.shape[0] * array.shape[1] > self._max_pixels:
            raise InvalidInput(f"{array.shape[1]}x{array.shape[0]} pixels, over {self._max_pixels}")
        return preprocess_pixels(array, pre)


def _size(item: Input) -> int:
    return len(item.data) if isinstance(item, ImageInput) else item.array.nbytes
