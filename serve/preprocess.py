"""Pure image preprocessing shared by training, serving and batch: bytes or pixels -> model input.

Every image goes the same way: decode (EXIF orientation applied) -> colour mode of the manifest
-> resize as the manifest says -> uint8 pixels -> the manifest's filters, if any (`serve.filters`)
-> float32 `pixel * scale + offset`.
Training calls exactly these functions, so a file classified by the server or by `clfbatch`
reaches the model as the same tensor it would have been in training.

    x = preprocess_bytes(Path("digit.png").read_bytes(), manifest.preprocessing)
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from serve.errors import InvalidInput
from serve.filters import apply_filters
from serve.manifest import Preprocessing

DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
_WHITE = (255, 255, 255)
_EXIF_ORIENTATION = 0x0112


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes, refusing images over `max_pixels` before decoding."""
    if not data:
        raise InvalidInput("empty image")
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidInput(
                f"image is {width}x{height} = {width * height} pixels, over the limit of "
                f"{max_pixels}"
            )
        image.load()
        # Transposing only when EXIF asks for it halves the cost of decoding a small image.
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        return image
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"image rejected as a decompression bomb: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise InvalidInput(f"cannot decode image: {exc}") from exc


def _flatten_alpha(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    array = np.asarray(image)
    if image.mode == "F":
        eight = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    else:  # 16-bit ("I;16*") or 32-bit integer ("I") holding 16-bit data
        eight = (np.clip(array.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    return Image.fromarray(eight, mode="L")


def convert_mode(image: Image.Image, color_mode: str) -> Image.Image:
    """Any Pillow mode (1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I;16, I, F) -> "L" or "RGB".

    Transparent pixels are composited onto white, as a viewer would show them.
    """
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_bit_depth_to_8bit(image)
    elif image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # "transparency" is a palette's alpha or the tRNS colour key of a 1, L or RGB PNG
        image = _flatten_alpha(image)
    target = "L" if color_mode == "grayscale" else "RGB"
    return image if image.mode == target else image.convert(target)


def resize(image: Image.Image, pre: Preprocessing) -> Image.Image:
    """Resize to the manifest's (height, width) by its resize mode and interpolation."""
    height, width = pre.size
    if image.size == (width, height):
        return image
    if pre.resize == "none":
        raise InvalidInput(
            f"image is {image.size[0]}x{image.size[1]}, the model takes exactly {width}x{height}"
        )
    resample = _RESAMPLE[pre.interpolation]
    if pre.resize == "stretch":
        return image.resize((width, height), resample)
    ratio = min(width / image.size[0], height / image.size[1])
    inner = (max(1, round(image.size[0] * ratio)), max(1, round(image.size[1] * ratio)))
    canvas = Image.new(image.mode, (width, height), 0)
    canvas.paste(image.resize(inner, resample), ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def to_pixels(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """A decoded image -> uint8 pixels of shape (height, width, channels)."""
    resized = resize(convert_mode(image, pre.color_mode), pre)
    pixels = np.asarray(resized, dtype=np.uint8)
    return pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels


def scale(pixels: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Resized uint8 pixels (one image or a batch) -> the float32 model input: the manifest's
    filters, then `pixel * scale + offset`.

    The filters run here, in the one step every path takes after resizing (files, raw pixels,
    whole uint8 batches), so that no caller can scale pixels without filtering them.
    """
    if pre.filters:
        pixels = apply_filters(pixels, pre.filters)
    scaled = pixels.astype(np.float32) * np.float32(pre.scale)
    if pre.offset:
        scaled += np.float32(pre.offset)
    return scaled


def preprocess_bytes(
    data: bytes, pre: Preprocessing, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Encoded image bytes -> float32 model input of shape `pre.input_shape`."""
    return scale(to_pixels(decode(data, max_pixels=max_pixels), pre), pre)


def pixels_to_image(array: np.ndarray) -> Image.Image:
    """Raw pixel intensities (0-255; HxW, HxWx1, HxWx3 or HxWx4; uint8 or float) -> an image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidInput(f"raw pixels must be HxW, HxWx1, HxWx3 or HxWx4, not {array.shape}")
    if array.size == 0:
        raise InvalidInput(f"raw pixels are empty: {array.shape}")
    if array.dtype != np.uint8:
        if not np.all(np.isfinite(array)):
            raise InvalidInput("raw pixels contain NaN or Inf")
        if array.min(initial=0) < 0 or array.max(initial=0) > 255:
            raise InvalidInput("raw pixel values must lie in 0..255")
        array = np.rint(array).astype(np.uint8)
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def preprocess_pixels(array: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Raw pixels -> float32 model input, through the same colour/resize/scale path as files."""
    return scale(to_pixels(pixels_to_image(array), pre), pre)


def check_model_input(array: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Check a preprocessed input (H,W,C or N,H,W,C) and return it as N,H,W,C float32."""
    batch = array[np.newaxis] if array.ndim == 3 else array
    if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(input_shape):
        raise InvalidInput(
            f"tensor shape {list(array.shape)} does not match the model input {[-1, *input_shape]}"
        )
    batch = batch.astype(np.float32, copy=False)
    if not np.all(np.isfinite(batch)):
        raise InvalidInput("tensor contains NaN or Inf")
    return batch
