"""`clfbatch features IMAGE --model NAME`: the feature maps of each convolutional layer for one
image, as the tutorials draw them (one grid PNG per layer, one tile per filter).

The version's Keras model is rebuilt from its `model.json` and given the SavedModel's weights
(`serve.loader.keras_model`); a second model whose outputs are the chosen layers' activations
runs once on the image, preprocessed as the manifest says (`serve.preprocess`). Each tile is one
channel, scaled to 0..255 on its own (min to max), enlarged to at least TILE pixels, nearest.

    paths = draw_features(FeatureSettings(Path("cat.png"), "cifar10"))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from PIL import Image, ImageDraw

from batch.backends import DEFAULT_REPOSITORY
from batch.errors import BatchError
from batch.options import Arg, Opt

TILE = 64  # smallest tile side in pixels
GAP = 2
TITLE = 16  # pixels of caption above the grid
ALL = "all"


@dataclass(frozen=True)
class FeatureSettings:
    """Every option of `clfbatch features` (each also a `CLFBATCH_*` variable)."""

    image: Annotated[Path, Arg("The image whose feature maps are drawn.")]
    model: Annotated[str, Opt("Model name in the repository.", ("--model", "-m"))]
    version: Annotated[int | None, Opt("Model version (default: the default one).")] = None
    repository: Annotated[Path, Opt("Model repository.")] = DEFAULT_REPOSITORY
    layer: Annotated[str, Opt("A convolutional layer's name, or all.")] = ALL
    out: Annotated[
        Path | None, Opt("Folder for the PNGs (default: ./<image>-<model>-features).")
    ] = None

    @property
    def folder(self) -> Path:
        return self.out or Path.cwd() / f"{self.image.stem}-{self.model}-features"


def conv_layers(model: Any) -> list[Any]:
    """The model's 2-D convolutional layers, in order (depthwise and separable ones included)."""
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def grid(maps: np.ndarray, title: str) -> Image.Image:
    """float [H, W, C] activations -> one greyscale grid image, one tile per channel."""
    height, width, channels = maps.shape
    zoom = max(1, math.ceil(TILE / max(height, width)))
    columns = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / columns)
    tile_h, tile_w = height * zoom, width * zoom
    sheet = Image.new(
        "L", (columns * (tile_w + GAP) + GAP, TITLE + rows * (tile_h + GAP) + GAP), 255
    )
    low = maps.min(axis=(0, 1))
    span = maps.max(axis=(0, 1)) - low
    scaled = (maps - low) / np.where(span > 0, span, 1.0) * 255.0
    for index in range(channels):
        tile = Image.fromarray(np.round(scaled[:, :, index]).astype(np.uint8), "L")
        tile = tile.resize((tile_w, tile_h), Image.Resampling.NEAREST)
        row, column = divmod(index, columns)
        sheet.paste(tile, (GAP + column * (tile_w + GAP), TITLE + GAP + row * (tile_h + GAP)))
    ImageDraw.Draw(sheet).text((GAP, 2), title, fill=0)
    return sheet


def draw_features(settings: FeatureSettings) -> list[Path]:
    """Write one PNG per chosen layer into `settings.folder`; returns their paths.

    Raises BatchError (exit 2) for a missing image, an unknown model or version, or a layer
    that is not one of the model's convolutional layers (the message lists them).
    """
    from serve.errors import ServeError
    from serve.loader import keras_model
    from serve.preprocess import preprocess_bytes
    from serve.repository import resolve

    if not settings.image.is_file():
        raise BatchError(f"{settings.image} is not a readable file")
    try:
        version = resolve(settings.repository, settings.model, settings.version)
        batch = preprocess_bytes(settings.image.read_bytes(), version.manifest.preprocessing)
    except ServeError as exc:
        raise BatchError(str(exc)) from None
    import keras

    model = keras_model(version)
    layers = conv_layers(model)
    names = [layer.name for layer in layers]
    if settings.layer != ALL and settings.layer not in names:
        raise BatchError(
            f"--layer {settings.layer!r} is not a convolutional layer of {version.name} "
            f"v{version.version}; its layers: {', '.join(names) or 'none'} (or all)"
        )
    chosen = [layer for layer in layers if settings.layer in (ALL, layer.name)]
    if not chosen:  # pragma: no cover - every scripts/training architecture has Conv2D layers
        raise BatchError(f"{version.name} v{version.version} has no convolutional layer")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    activations = keras.Model(inputs, [layer.output for layer in chosen])
    outputs = activations(batch[np.newaxis], training=False)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    folder = settings.folder
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (layer, output) in enumerate(zip(chosen, outputs, strict=True)):
        maps = np.asarray(output, dtype=np.float32)[0]
        title = f"{version.name} v{version.version}  {layer.name}  {list(maps.shape)}"
        path = folder / f"{index + 1:02d}-{layer.name}.png"
        grid(maps, title).save(path)
        written.append(path)
    return written
