"""Image filters a manifest may ask for: the tutorial's sharpen, blur, edges and blur+sharpen.

They run on the resized uint8 pixels, before scaling (see `serve.preprocess.scale`), on one image
(H, W, C) or a batch (N, H, W, C), every channel alike, and return uint8 pixels of the same shape.
The facts are the faces/CIFAR-10 tutorial's (its section 3, OpenCV calls); the code is ours:

- `sharpen`: the kernel [[0,-1,0],[-1,5,-1],[0,-1,0]] (`cv2.filter2D`, ddepth -1).
- `blur`: the 3x3 Gaussian with sigma from the size (`cv2.GaussianBlur(img, (3, 3), 0)`), whose
  weights are exactly [[1,2,1],[2,4,2],[1,2,1]] / 16.
- `edges`: Canny edge detection of the blurred image with thresholds 50 and 150
  (`cv2.Canny`): 3x3 Sobel gradients, L1 magnitude, the channel with the largest magnitude,
  non-maximum suppression along the gradient, and hysteresis; edge pixels are 255, the rest 0,
  in every channel.
- `blur+sharpen`: blur, then sharpen (the tutorial's section 3.6).

Borders and rounding are defined, not left to a library: pixels outside the image mirror the
inside without repeating the edge pixel (`dcb|abcd|cba`, OpenCV's default border, numpy's
"reflect"); Canny's Sobel repeats the edge pixel instead (`aaa|abcd|ddd`, as OpenCV's Canny
does) and treats gradients outside the image as zero. Everything is integer arithmetic: a
sum is clipped to 0..255 and a blurred value is rounded to the nearest integer, halves up.
Pillow's `ImageFilter.Kernel` gives the same values inside the image but leaves the one-pixel
frame unfiltered (12% of a 32x32 image), so it is not used.

    sharp = apply_filters(pixels, ("sharpen",))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

_SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
_GAUSS = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])  # / 16
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
CANNY_LOW, CANNY_HIGH = 50, 150
# OpenCV's fixed-point tan(22.5 degrees) with 15 fraction bits, which decides the direction
_TG22, _SHIFT = 13573, 15


def _pad(pixels: np.ndarray, mode: Literal["reflect", "edge"]) -> np.ndarray:
    """One pixel of border on the two spatial axes, (..., H, W, C) -> (..., H+2, W+2, C)."""
    return np.pad(pixels, [(0, 0)] * (pixels.ndim - 3) + [(1, 1), (1, 1), (0, 0)], mode=mode)


def _correlate(padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 correlation (as `cv2.filter2D`) of an int32 array padded by one pixel."""
    height, width = padded.shape[-3] - 2, padded.shape[-2] - 2
    out = np.zeros((*padded.shape[:-3], height, width, padded.shape[-1]), dtype=np.int32)
    for row in range(3):
        for col in range(3):
            if kernel[row, col]:
                out += kernel[row, col] * padded[..., row : row + height, col : col + width, :]
    return out


def sharpen(pixels: np.ndarray) -> np.ndarray:
    total = _correlate(_pad(pixels.astype(np.int32), "reflect"), _SHARPEN)
    return np.clip(total, 0, 255).astype(np.uint8)


def blur(pixels: np.ndarray) -> np.ndarray:
    total = _correlate(_pad(pixels.astype(np.int32), "reflect"), _GAUSS)
    return ((total + 8) >> 4).astype(np.uint8)  # / 16, halves up; never above 255


def _shifted(array: np.ndarray, d_row: int, d_col: int) -> np.ndarray:
    """array[y + d_row, x + d_col] at every (y, x) of a (..., H, W) array, zero outside."""
    padded = np.pad(array, [(0, 0)] * (array.ndim - 2) + [(1, 1), (1, 1)])
    height, width = array.shape[-2:]
    return padded[..., 1 + d_row : 1 + d_row + height, 1 + d_col : 1 + d_col + width]


def _canny(pixels: np.ndarray) -> np.ndarray:
    """Canny of uint8 (..., H, W, C) -> bool edge map (..., H, W)."""
    padded = _pad(pixels.astype(np.int32), "edge")
    dx = _correlate(padded, _SOBEL_X)
    dy = _correlate(padded, _SOBEL_X.T)
    magnitude = np.abs(dx) + np.abs(dy)
    # the channel with the largest magnitude gives the gradient (the first of equals)
    best = np.argmax(magnitude, axis=-1)[..., np.newaxis]
    dx, dy = (np.take_along_axis(d, best, axis=-1)[..., 0] for d in (dx, dy))
    mag = np.take_along_axis(magnitude, best, axis=-1)[..., 0]
    ax, ay = np.abs(dx).astype(np.int64), np.abs(dy).astype(np.int64)
    tg22x = ax * _TG22
    horizontal = (ay << _SHIFT) < tg22x
    vertical = ~horizontal & ((ay << _SHIFT) > tg22x + (ax << (_SHIFT + 1)))
    diagonal = ~horizontal & ~vertical
    same_sign = (dx ^ dy) >= 0  # the gradient runs along y = x (image rows grow downwards)
    maximum = (
        (horizontal & (mag > _shifted(mag, 0, -1)) & (mag >= _shifted(mag, 0, 1)))
        | (vertical & (mag > _shifted(mag, -1, 0)) & (mag >= _shifted(mag, 1, 0)))
        | (diagonal & same_sign & (mag > _shifted(mag, -1, -1)) & (mag > _shifted(mag, 1, 1)))
        | (diagonal & ~same_sign & (mag > _shifted(mag, -1, 1)) & (mag > _shifted(mag, 1, -1)))
    )
    candidate = maximum & (mag > CANNY_LOW)
    edge = candidate & (mag > CANNY_HIGH)
    while True:  # hysteresis: candidates 8-connected to an edge become edges
        near = np.zeros_like(edge)
        for d_row in (-1, 0, 1):
            for d_col in (-1, 0, 1):
                near |= _shifted(edge, d_row, d_col)
        grown = edge | (candidate & near)
        if np.array_equal(grown, edge):
            return edge
        edge = grown


def edges(pixels: np.ndarray) -> np.ndarray:
    found = _canny(blur(pixels))
    return np.repeat(
        np.where(found, 255, 0).astype(np.uint8)[..., np.newaxis], pixels.shape[-1], -1
    )


def blur_sharpen(pixels: np.ndarray) -> np.ndarray:
    return sharpen(blur(pixels))


FILTER_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sharpen": sharpen,
    "blur": blur,
    "edges": edges,
    "blur+sharpen": blur_sharpen,
}


def apply_filters(pixels: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """uint8 (H, W, C) or (N, H, W, C) -> the same shape, each named filter applied in order."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (3, 4):
        raise ValueError(
            f"filters take uint8 HxWxC or NxHxWxC pixels, not {pixels.dtype} {pixels.shape}"
        )
    for name in names:
        pixels = FILTER_FUNCTIONS[name](pixels)
    return pixels
