"""serve.preprocess: decoding, colour modes, resizing, scaling, and train/serve identity."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training.data import load_split

from serve.errors import InvalidInput
from serve.manifest import Preprocessing
from serve.preprocess import (
    check_model_input,
    decode,
    preprocess_bytes,
    preprocess_pixels,
    to_pixels,
)
from tests.images import encode

GRAY = Preprocessing(color_mode="grayscale", size=(28, 28))
RGB = Preprocessing(color_mode="rgb", size=(32, 32))


def _image_bytes(kind: str) -> bytes:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    if kind == "gray":
        Image.fromarray(rgb[:, :, 0], "L").save(buffer, "PNG")
    elif kind == "rgb":
        Image.fromarray(rgb, "RGB").save(buffer, "PNG")
    elif kind == "rgba":
        alpha = rng.integers(0, 256, (40, 30, 1), dtype=np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(buffer, "PNG")
    elif kind == "palette":
        Image.fromarray(rgb, "RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "PNG")
    elif kind == "jpeg-exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
        Image.fromarray(rgb, "RGB").save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["gray", "rgb", "rgba", "palette", "jpeg-exif"])
@pytest.mark.parametrize("pre", [GRAY, RGB], ids=["grayscale", "rgb"])
def test_training_sees_the_tensor_serving_builds(tmp_path: Path, kind: str, pre: Preprocessing):
    data = _image_bytes(kind)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / f"img.{'jpg' if kind == 'jpeg-exif' else 'png'}").write_bytes(data)
    trained_on = load_split(tmp_path, pre).images[0]
    served = preprocess_bytes(data, pre)
    assert served.shape == pre.input_shape
    assert served.dtype == np.float32
    np.testing.assert_array_equal(trained_on, served)
    assert served.min() >= 0.0 and served.max() <= 1.0


def test_exif_orientation_is_applied():
    image = decode(_image_bytes("jpeg-exif"))
    assert image.size == (40, 30)  # stored 30 wide x 40 high, displayed rotated


def test_alpha_is_composited_on_white():
    transparent = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels = to_pixels(decode(encode(transparent)), Preprocessing("rgb", (4, 4)))
    assert (pixels == 255).all()


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits():
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 0xAB00, dtype=np.uint16)).save(buffer, "PNG")
    pixels = to_pixels(decode(buffer.getvalue()), Preprocessing("grayscale", (8, 8)))
    assert (pixels == 0xAB).all()


def test_cmyk_jpeg_decodes_to_rgb():
    buffer = io.BytesIO()
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(buffer, "JPEG")
    pixels = to_pixels(decode(buffer.getvalue()), RGB)
    assert pixels.shape == (32, 32, 3)
    assert pixels[..., 0].mean() > 200 and pixels[..., 1].mean() < 60


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "WEBP", "TIFF"])
def test_other_formats_decode(fmt: str):
    rgb = np.full((12, 12, 3), 200, dtype=np.uint8)
    assert preprocess_bytes(encode(rgb, fmt), RGB).shape == (32, 32, 3)


def test_pad_resize_keeps_aspect_and_pads_black():
    white = np.full((10, 40, 3), 255, dtype=np.uint8)
    pixels = to_pixels(decode(encode(white)), Preprocessing("rgb", (40, 40), resize="pad"))
    assert pixels.shape == (40, 40, 3)
    assert (pixels[0] == 0).all() and (pixels[20] == 255).all()


def test_resize_none_refuses_other_sizes():
    with pytest.raises(InvalidInput, match="exactly 28x28"):
        preprocess_bytes(
            encode(np.zeros((10, 10), np.uint8)),
            Preprocessing("grayscale", (28, 28), resize="none"),
        )


def test_raw_pixels_take_the_same_path_as_files():
    rgb = np.random.default_rng(2).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_pixels(rgb, RGB), preprocess_bytes(encode(rgb), RGB))
    np.testing.assert_array_equal(
        preprocess_pixels(rgb.astype(np.float32), RGB), preprocess_pixels(rgb, RGB)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty image"),
        (b"not an image at all", "cannot decode"),
        (encode(np.zeros((8, 8), np.uint8))[:40], "cannot decode"),
    ],
)
def test_bad_bytes_are_invalid_input(data: bytes, message: str):
    with pytest.raises(InvalidInput, match=message):
        preprocess_bytes(data, GRAY)


def test_decompression_bombs_are_refused_before_decoding():
    big = encode(np.zeros((3000, 3000), np.uint8))
    with pytest.raises(InvalidInput, match="over the limit"):
        decode(big, max_pixels=1_000_000)


def test_raw_pixels_out_of_range_or_nan_are_refused():
    with pytest.raises(InvalidInput, match=r"0\.\.255"):
        preprocess_pixels(np.full((4, 4), 300.0), GRAY)
    with pytest.raises(InvalidInput, match="NaN"):
        preprocess_pixels(np.full((4, 4), np.nan), GRAY)
    with pytest.raises(InvalidInput, match="HxW"):
        preprocess_pixels(np.zeros((4, 4, 2)), GRAY)


def test_check_model_input_validates_shape_and_values():
    assert check_model_input(np.zeros((28, 28, 1)), (28, 28, 1)).shape == (1, 28, 28, 1)
    with pytest.raises(InvalidInput, match="does not match"):
        check_model_input(np.zeros((2, 28, 28, 3)), (28, 28, 1))
    with pytest.raises(InvalidInput, match="NaN or Inf"):
        check_model_input(np.full((1, 28, 28, 1), np.inf), (28, 28, 1))
