"""Synthetic images made at test time (no dataset image is ever committed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

GRAY_CLASSES = ("dark", "light")
RGB_CLASSES = ("blue", "green", "red")


def gray_pixels(
    label: str, rng: np.random.Generator, size: tuple[int, int] = (28, 28)
) -> np.ndarray:
    base = 60 if label == "dark" else 190
    return np.clip(rng.normal(base, 30, size), 0, 255).astype(np.uint8)


def rgb_pixels(
    label: str, rng: np.random.Generator, size: tuple[int, int] = (32, 32)
) -> np.ndarray:
    pixels = rng.integers(0, 90, (*size, 3))
    pixels[:, :, ("red", "green", "blue").index(label)] += 150
    return np.clip(pixels, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_dataset(
    root: Path, kind: str, per_class: int = 30, test_per_class: int = 8, seed: int = 0
) -> Path:
    """A `train/<class>/` + `test/<class>/` folder of PNGs, as the shared archives are laid out."""
    rng = np.random.default_rng(seed)
    classes, make = (GRAY_CLASSES, gray_pixels) if kind == "gray" else (RGB_CLASSES, rgb_pixels)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                (folder / f"{label}_{index:03d}.png").write_bytes(encode(make(label, rng)))
    return root
