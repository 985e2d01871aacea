"""serve.preprocess against tensors written out by hand: scaling, each resize mode, padding
placement, EXIF orientation, colour modes; decoding limits and errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training.data import load_split

from batch.reader import read_image
from serve.errors import InvalidInput
from serve.manifest import Preprocessing
from serve.preprocess import (
    check_model_input,
    convert_mode,
    decode,
    preprocess_bytes,
    preprocess_pixels,
    to_pixels,
)
from tests.images import encode

GRAY = Preprocessing(color_mode="grayscale", size=(28, 28))
RGB = Preprocessing(color_mode="rgb", size=(32, 32))


def png(pixels: list | np.ndarray, mode: str | None = None, **options: object) -> bytes:
    """A lossless PNG of exactly these pixel values."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode=mode).save(buffer, "PNG", **options)
    return buffer.getvalue()


def tensor(rows: list, scale: float = 255.0) -> np.ndarray:
    """The expected model input, written out: pixel values / 255, with a channel axis if 2-D."""
    array = np.asarray(rows, dtype=np.float64) / scale
    return (array[:, :, np.newaxis] if array.ndim == 2 else array).astype(np.float32)


def gray(height: int, width: int, resize: str = "none", **kw: object) -> Preprocessing:
    return Preprocessing("grayscale", (height, width), resize=resize, **kw)  # type: ignore[arg-type]


def rgb(height: int, width: int, resize: str = "none", **kw: object) -> Preprocessing:
    return Preprocessing("rgb", (height, width), resize=resize, **kw)  # type: ignore[arg-type]


# ---- scaling -------------------------------------------------------------------------------


def test_pixels_are_scaled_to_unit_range() -> None:
    got = preprocess_bytes(png([[0, 51], [102, 255]]), gray(2, 2))
    assert got.dtype == np.float32 and got.shape == (2, 2, 1)
    np.testing.assert_allclose(got, [[[0.0], [0.2]], [[0.4], [1.0]]], atol=1e-7)


def test_scale_and_offset_from_the_manifest() -> None:
    got = preprocess_bytes(png([[0, 51], [102, 255]]), gray(2, 2, scale=2 / 255, offset=-1.0))
    np.testing.assert_allclose(got[:, :, 0], [[-1.0, -0.6], [-0.2, 1.0]], atol=1e-6)


# ---- resize modes --------------------------------------------------------------------------


def test_stretch_nearest_repeats_each_pixel() -> None:
    got = preprocess_bytes(
        png([[10, 20], [30, 40]]), gray(4, 4, "stretch", interpolation="nearest")
    )
    expected = [
        [10, 10, 20, 20],
        [10, 10, 20, 20],
        [30, 30, 40, 40],
        [30, 30, 40, 40],
    ]
    np.testing.assert_allclose(got, tensor(expected), atol=1e-7)


def test_stretch_ignores_the_aspect_ratio() -> None:
    got = preprocess_bytes(png([[0, 200]]), gray(3, 4, "stretch", interpolation="nearest"))
    np.testing.assert_allclose(got, tensor([[0, 0, 200, 200]] * 3), atol=1e-7)


def test_stretch_box_downscale_averages_blocks() -> None:
    image = [
        [0, 0, 100, 200],
        [0, 0, 100, 200],
        [10, 30, 255, 255],
        [50, 70, 255, 255],
    ]
    got = preprocess_bytes(png(image), gray(2, 2, "stretch", interpolation="box"))
    np.testing.assert_allclose(got, tensor([[0, 150], [40, 255]]), atol=1e-7)


def test_pad_centres_a_wide_image_between_black_rows() -> None:
    got = preprocess_bytes(png(np.full((2, 4), 255)), gray(4, 4, "pad", interpolation="nearest"))
    expected = [
        [0, 0, 0, 0],
        [255, 255, 255, 255],
        [255, 255, 255, 255],
        [0, 0, 0, 0],
    ]
    np.testing.assert_allclose(got, tensor(expected), atol=1e-7)


def test_pad_centres_a_tall_image_between_black_columns() -> None:
    got = preprocess_bytes(png(np.full((4, 2), 255)), gray(4, 4, "pad", interpolation="nearest"))
    np.testing.assert_allclose(got, tensor([[0, 255, 255, 0]] * 4), atol=1e-7)


def test_pad_puts_the_odd_row_of_padding_at_the_bottom() -> None:
    got = preprocess_bytes(png([[90, 90, 90, 90]]), gray(4, 4, "pad", interpolation="nearest"))
    expected = [[0] * 4, [90] * 4, [0] * 4, [0] * 4]
    np.testing.assert_allclose(got, tensor(expected), atol=1e-7)


def test_pad_scales_up_to_fit_then_pads() -> None:
    got = preprocess_bytes(png([[10, 20]]), gray(4, 4, "pad", interpolation="nearest"))
    expected = [[0] * 4, [10, 10, 20, 20], [10, 10, 20, 20], [0] * 4]
    np.testing.assert_allclose(got, tensor(expected), atol=1e-7)


def test_resize_none_takes_the_image_as_it_is_and_refuses_other_sizes() -> None:
    np.testing.assert_allclose(
        preprocess_bytes(png([[7, 8, 9]]), gray(1, 3)), tensor([[7, 8, 9]]), atol=1e-7
    )
    with pytest.raises(InvalidInput, match="exactly 3x1"):
        preprocess_bytes(png([[7, 8]]), gray(1, 3))


# ---- EXIF orientation ----------------------------------------------------------------------

STORED = [[10, 20, 30], [40, 50, 60]]  # 3 wide x 2 high as stored in the file


@pytest.mark.parametrize(
    ("orientation", "displayed"),
    [
        (1, [[10, 20, 30], [40, 50, 60]]),
        (2, [[30, 20, 10], [60, 50, 40]]),  # mirrored left-right
        (3, [[60, 50, 40], [30, 20, 10]]),  # rotated 180°
        (6, [[40, 10], [50, 20], [60, 30]]),  # rotate 90° clockwise to display
        (8, [[30, 60], [20, 50], [10, 40]]),  # rotate 90° counter-clockwise to display
    ],
)
def test_exif_orientation_is_applied(orientation: int, displayed: list) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = png(STORED, exif=exif)
    height, width = len(displayed), len(displayed[0])
    np.testing.assert_allclose(
        preprocess_bytes(data, gray(height, width)), tensor(displayed), atol=1e-7
    )


def test_exif_orientation_of_a_jpeg_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(buffer, "JPEG", exif=exif)
    assert decode(buffer.getvalue()).size == (30, 40)  # stored 40 wide x 30 high


# ---- colour modes --------------------------------------------------------------------------


def test_rgb_to_grayscale_uses_itu_r_601_luma() -> None:
    # L = (299 R + 587 G + 114 B) / 1000: red 76.2, green 149.7, blue 29.1, white 255
    image = [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]]
    got = preprocess_bytes(png(image), gray(2, 2))
    np.testing.assert_allclose(got, tensor([[76, 150], [29, 255]]), atol=1 / 255 + 1e-7)


def test_grayscale_to_rgb_repeats_the_value() -> None:
    got = preprocess_bytes(png([[0, 128]]), rgb(1, 2))
    np.testing.assert_allclose(got, tensor([[[0, 0, 0], [128, 128, 128]]]), atol=1e-7)


def test_rgb_channels_stay_in_order() -> None:
    image = [[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]]
    np.testing.assert_allclose(preprocess_bytes(png(image), rgb(1, 4)), tensor(image), atol=1e-7)


def test_rgba_is_composited_on_white() -> None:
    image = [[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 128]]]
    got = preprocess_bytes(png(image, "RGBA"), rgb(1, 3))
    # opaque: the colour; transparent: white; half: (c * 128 + 255 * 127) / 255
    half = [(200 * 128 + 255 * 127) / 255, (100 * 128 + 255 * 127) / 255, 255 * 127 / 255]
    expected = tensor([[[200, 100, 0], [255, 255, 255], half]])
    np.testing.assert_allclose(got, expected, atol=1 / 255 + 1e-7)


def test_gray_with_alpha_is_composited_on_white() -> None:
    image = [[[40, 255], [40, 0]]]
    got = preprocess_bytes(png(image, "LA"), gray(1, 2))
    np.testing.assert_allclose(got, tensor([[40, 255]]), atol=1e-7)


def test_palette_indices_become_their_colours() -> None:
    image = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    got = preprocess_bytes(buffer.getvalue(), rgb(2, 2))
    expected = [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 0, 0]]]
    np.testing.assert_allclose(got, tensor(expected), atol=1e-7)


def test_palette_transparency_is_composited_on_white() -> None:
    image = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=1)
    got = preprocess_bytes(buffer.getvalue(), rgb(1, 2))
    np.testing.assert_allclose(got, tensor([[[255, 0, 0], [255, 255, 255]]]), atol=1e-7)


def test_training_builds_the_tensor_written_out_here(tmp_path: Path) -> None:
    """Training's loader, checked against the same hand-written expectation as serving."""
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "img.png").write_bytes(png([[10, 20], [30, 40]]))
    pre = gray(4, 4, "stretch", interpolation="nearest")
    expected = tensor([[10, 10, 20, 20], [10, 10, 20, 20], [30, 30, 40, 40], [30, 30, 40, 40]])
    np.testing.assert_allclose(load_split(tmp_path, pre).images[0], expected, atol=1e-7)


def test_training_serving_and_batch_build_the_same_filtered_tensor(tmp_path: Path) -> None:
    """The identity check with a filtered manifest: training's loader, the server's file and
    raw-pixel paths and clfbatch's reader all give the tensor written out here (the 2x2 image
    stretched to 4x4 by nearest, then sharpened; worked out in tests/serve/test_filters.py)."""
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "img.png").write_bytes(png([[10, 20], [30, 40]]))
    pre = gray(4, 4, "stretch", interpolation="nearest", filters=("sharpen",))
    expected = tensor([[10, 0, 30, 20], [0, 0, 10, 0], [50, 40, 70, 60], [30, 20, 50, 40]])
    built = {
        "training": load_split(tmp_path, pre).images[0],
        "serving, file": preprocess_bytes(png([[10, 20], [30, 40]]), pre),
        "serving, pixels": preprocess_pixels(np.array([[10, 20], [30, 40]], np.uint8), pre),
        "clfbatch": read_image(tmp_path / "a" / "img.png", pre),
    }
    for where, got in built.items():
        np.testing.assert_allclose(got, expected, atol=1e-7, err_msg=where)


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


def test_raw_pixels_are_rounded_then_take_the_file_path() -> None:
    floats = np.array([[0.4, 0.6], [100.2, 254.7]])
    np.testing.assert_allclose(
        preprocess_pixels(floats, gray(2, 2)), tensor([[0, 1], [100, 255]]), atol=1e-7
    )
    rgb_pixels = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)
    np.testing.assert_allclose(
        preprocess_pixels(rgb_pixels, gray(1, 2, "none")),
        preprocess_bytes(png(rgb_pixels), gray(1, 2, "none")),
        atol=0,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^empty image$"),
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
    with pytest.raises(InvalidInput, match=r"^raw pixel values must lie in 0\.\.255$"):
        preprocess_pixels(np.full((4, 4), 300.0), GRAY)
    with pytest.raises(InvalidInput, match=r"^raw pixels contain NaN or Inf$"):
        preprocess_pixels(np.full((4, 4), np.nan), GRAY)
    with pytest.raises(InvalidInput, match="HxW"):
        preprocess_pixels(np.zeros((4, 4, 2)), GRAY)


def test_check_model_input_validates_shape_and_values():
    assert check_model_input(np.zeros((28, 28, 1)), (28, 28, 1)).shape == (1, 28, 28, 1)
    with pytest.raises(InvalidInput, match="does not match"):
        check_model_input(np.zeros((2, 28, 28, 3)), (28, 28, 1))
    with pytest.raises(InvalidInput, match=r"^tensor contains NaN or Inf$"):
        check_model_input(np.full((1, 28, 28, 1), np.inf), (28, 28, 1))


# ---- edges found by mutation testing (make mutation) ----------------------------------------


def test_pad_keeps_at_least_one_pixel_of_a_very_thin_image() -> None:
    thin = np.full((100, 1), 255)  # 1 wide: scaled to 4 high it would be 0.04 wide
    got = preprocess_bytes(png(thin), gray(4, 4, "pad", interpolation="nearest"))
    np.testing.assert_allclose(got, tensor([[0, 255, 0, 0]] * 4), atol=1e-7)


def test_pixel_limit_is_inclusive() -> None:
    assert decode(png(np.zeros((10, 10))), max_pixels=100).size == (10, 10)
    with pytest.raises(InvalidInput, match=r"10x10 = 100 pixels, over the limit of 99"):
        decode(png(np.zeros((10, 10))), max_pixels=99)


def tiff(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, "TIFF")
    return buffer.getvalue()


def test_float_images_are_clipped_to_eight_bits() -> None:
    values = np.array([[-5.0, 100.4, 300.0, np.nan]], np.float32)
    got = preprocess_bytes(tiff(values, "F"), gray(1, 4))
    np.testing.assert_allclose(got, tensor([[0, 100, 255, 0]]), atol=1e-7)


def test_32_bit_integer_images_keep_the_high_byte_of_16_bits() -> None:
    values = np.array([[-5, 0x01FF, 0xAB00, 70_000]], np.int32)
    got = preprocess_bytes(tiff(values, "I"), gray(1, 4))
    np.testing.assert_allclose(got, tensor([[0, 0x01, 0xAB, 0xFF]]), atol=1e-7)


def test_raw_pixels_with_one_channel_or_alpha() -> None:
    column = np.array([[[10], [20]]], np.uint8)  # 1 x 2 x 1
    np.testing.assert_allclose(preprocess_pixels(column, gray(1, 2)), tensor([[10, 20]]), atol=1e-7)
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0]]], np.uint8)
    np.testing.assert_allclose(
        preprocess_pixels(rgba, rgb(1, 2)), tensor([[[200, 100, 0], [255, 255, 255]]]), atol=1e-7
    )


def test_raw_pixel_range_is_inclusive_of_255() -> None:
    np.testing.assert_allclose(
        preprocess_pixels(np.array([[0.0, 255.0]]), gray(1, 2)), tensor([[0, 255]]), atol=1e-7
    )
    with pytest.raises(InvalidInput, match=r"0\.\.255"):
        preprocess_pixels(np.array([[0.0, 255.5]]), gray(1, 2))


def test_size_errors_say_what_was_given_and_what_is_expected() -> None:
    with pytest.raises(InvalidInput, match=r"^image is 2x1, the model takes exactly 3x1$"):
        preprocess_bytes(png([[7, 8]]), gray(1, 3))
    with pytest.raises(InvalidInput, match=r"\[2, 28, 28, 3\] does not match .* \[-1, 28, 28, 1\]"):
        check_model_input(np.zeros((2, 28, 28, 3)), (28, 28, 1))


def test_orientation_is_read_from_its_own_exif_tag() -> None:
    exif = Image.Exif()
    exif[0x0001] = 1  # another tag holding 1 must not pass for "upright"
    exif[0x0112] = 6
    got = preprocess_bytes(png(STORED, exif=exif), gray(3, 2))
    np.testing.assert_allclose(got, tensor([[40, 10], [50, 20], [60, 30]]), atol=1e-7)


def test_an_upright_image_is_not_copied() -> None:
    """Only an image that EXIF says to turn is transposed (a copy, which forgets its format)."""
    assert decode(png(STORED)).format == "PNG"
    exif = Image.Exif()
    exif[0x0112] = 1
    assert decode(png(STORED, exif=exif)).format == "PNG"


def test_pillow_decompression_bomb_is_invalid_input(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow refuses an image over twice its MAX_IMAGE_PIXELS while opening it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(InvalidInput, match=r"^image rejected as a decompression bomb: "):
        decode(png(np.zeros((5, 5))), max_pixels=1_000)


def test_preprocess_bytes_passes_on_the_pixel_limit() -> None:
    with pytest.raises(InvalidInput, match="over the limit of 99"):
        preprocess_bytes(png(np.zeros((10, 10))), gray(10, 10), max_pixels=99)


def test_palette_and_premultiplied_alpha_are_composited_on_white() -> None:
    palette_alpha = Image.new("PA", (2, 1))
    palette_alpha.putpalette([200, 100, 0] * 256)
    palette_alpha.putpixel((0, 0), (0, 255))  # opaque
    palette_alpha.putpixel((1, 0), (0, 0))  # transparent
    premultiplied = Image.frombytes("RGBa", (2, 1), bytes([200, 100, 0, 255, 0, 0, 0, 0]))
    for image in (palette_alpha, premultiplied):
        got = np.asarray(convert_mode(image, "rgb"))
        np.testing.assert_array_equal(got, [[[200, 100, 0], [255, 255, 255]]], err_msg=image.mode)


def test_the_transparent_colour_of_a_png_is_composited_on_white() -> None:
    """A 1, L or RGB PNG marks one colour transparent (its tRNS chunk): a viewer shows white."""
    gray_key = png([[0, 200]], transparency=0)
    got = preprocess_bytes(gray_key, gray(1, 2))
    np.testing.assert_allclose(got, tensor([[255, 200]]), atol=1e-7)
    rgb_key = png([[[0, 0, 0], [200, 100, 0]]], transparency=(0, 0, 0))
    expected = tensor([[[255, 255, 255], [200, 100, 0]]])
    np.testing.assert_allclose(preprocess_bytes(rgb_key, rgb(1, 2)), expected, atol=1e-7)
    buffer = io.BytesIO()
    one_bit = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    one_bit.save(buffer, "PNG", transparency=0)
    got = preprocess_bytes(buffer.getvalue(), gray(1, 2))
    np.testing.assert_allclose(got, tensor([[255, 255]]), atol=1e-7)


@pytest.mark.parametrize("shape", [(0, 0), (0, 3), (2, 0, 3)])
@pytest.mark.parametrize("resize", ["stretch", "pad"])
def test_empty_raw_pixels_are_refused(shape: tuple[int, ...], resize: str) -> None:
    with pytest.raises(InvalidInput, match=r"^raw pixels are empty: \("):
        preprocess_pixels(np.zeros(shape), gray(2, 2, resize))


def test_check_model_input_gives_float32_and_copies_only_to_convert() -> None:
    doubles = np.full((1, 2, 2, 1), 0.5)
    got = check_model_input(doubles, (2, 2, 1))
    assert got.dtype == np.float32 and got.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(got, np.full((1, 2, 2, 1), 0.5, np.float32))
    batch = np.zeros((3, 2, 2, 1), np.float32)
    assert check_model_input(batch, (2, 2, 1)) is batch  # a large batch is not copied
