"""The manifest: the one description of a model version that training, serving and batch share.

`manifest.json` sits beside the SavedModel in `trained/<task>/<version>/`. Its stable keys are
`task`, `version`, `classes`, `input_shape`, `preprocessing` and `metrics.test_accuracy`;
everything else (training facts, per-class metrics) is informative.

    manifest = Manifest.read(Path("trained/mnist/2/manifest.json"))
    manifest.preprocessing.color_mode  # "grayscale"
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from serve.errors import ManifestError
from serve.manifest_entries import Artefact, Embedding, Signature
from serve.version_labels import check_label

SCHEMA_VERSION = 1
ColorMode = Literal["grayscale", "rgb"]
ResizeMode = Literal["none", "stretch", "pad"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box"]
COLOR_MODES: tuple[str, ...] = ("grayscale", "rgb")
RESIZE_MODES: tuple[str, ...] = ("none", "stretch", "pad")
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos", "box")
# the image filters of serve.filters (the tutorial's kernels); "blur+sharpen" is its combination
FILTERS: tuple[str, ...] = ("sharpen", "blur", "edges", "blur+sharpen")


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's float32 input.

    `resize` "stretch" scales to `size` ignoring the aspect ratio; "pad" keeps it and pads
    with black (as `tf.image.resize_with_pad`); "none" requires the image to be `size` already.
    `filters` (names from FILTERS) run in order on the resized uint8 pixels, before scaling.
    The scaled value is `pixel * scale + offset`.
    """

    color_mode: ColorMode
    size: tuple[int, int]  # (height, width)
    resize: ResizeMode = "stretch"
    interpolation: Interpolation = "bilinear"
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    filters: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size[0], self.size[1], self.channels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        if self.filters:
            data["filters"] = list(self.filters)
        else:  # a manifest without filters stays as manifests were written before them
            del data["filters"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        try:
            pre = cls(
                color_mode=data["color_mode"],
                size=(int(data["size"][0]), int(data["size"][1])),
                resize=data.get("resize", "stretch"),
                interpolation=data.get("interpolation", "bilinear"),
                scale=float(data.get("scale", 1.0 / 255.0)),
                offset=float(data.get("offset", 0.0)),
                filters=_filter_names(data.get("filters", [])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ManifestError(f"bad preprocessing section: {exc!r}") from exc
        pre.validate()
        return pre

    def validate(self) -> None:
        if self.color_mode not in COLOR_MODES:
            raise ManifestError(f"color_mode must be one of {COLOR_MODES}, not {self.color_mode!r}")
        if self.resize not in RESIZE_MODES:
            raise ManifestError(f"resize must be one of {RESIZE_MODES}, not {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ManifestError(f"interpolation must be one of {INTERPOLATIONS}")
        if min(self.size) < 1:
            raise ManifestError(f"size must be positive, not {self.size}")
        for name in self.filters:
            if name not in FILTERS:
                raise ManifestError(f"unknown filter {name!r}; known filters: {', '.join(FILTERS)}")


def _filter_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ManifestError(f"filters must be a list of filter names, not {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Manifest:
    task: str
    version: int
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    architecture: str = "unknown"
    signature: Signature = field(default_factory=Signature)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema: int = SCHEMA_VERSION
    artefacts: dict[str, Artefact] = field(default_factory=dict)  # by runtime name; optional
    embedding: Embedding | None = None  # the `embedding` signature, if the SavedModel has one
    labels: tuple[str, ...] = ()  # version labels, e.g. ("fast",): serve.version_labels

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocessing.input_shape

    @property
    def test_accuracy(self) -> float | None:
        value = self.metrics.get("test_accuracy")
        return float(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": self.schema,
            "task": self.task,
            "version": self.version,
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "preprocessing": self.preprocessing.to_dict(),
            "architecture": self.architecture,
            "signature": asdict(self.signature),
            "metrics": self.metrics,
            "training": self.training,
            "created": self.created,
        }
        if self.artefacts:  # absent from manifests written before runtimes existed
            data["artefacts"] = {name: asdict(a) for name, a in sorted(self.artefacts.items())}
        if self.embedding is not None:
            data["embedding"] = asdict(self.embedding)
        if self.labels:
            data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            pre = Preprocessing.from_dict(data["preprocessing"])
            manifest = cls(
                task=str(data["task"]),
                version=int(data["version"]),
                classes=tuple(str(c) for c in data["classes"]),
                preprocessing=pre,
                architecture=str(data.get("architecture", "unknown")),
                signature=Signature(**data.get("signature", {})),
                metrics=dict(data.get("metrics", {})),
                training=dict(data.get("training", {})),
                created=str(data.get("created", "")),
                schema=int(data.get("schema", SCHEMA_VERSION)),
                artefacts={
                    str(name): Artefact.from_dict(entry)
                    for name, entry in dict(data.get("artefacts", {})).items()
                },
                embedding=(
                    Embedding.from_dict(dict(data["embedding"])) if data.get("embedding") else None
                ),
                labels=tuple(check_label(label) for label in data.get("labels", [])),
            )
        except ManifestError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest is missing or has a bad key: {exc!r}") from exc
        if len(manifest.classes) < 2:
            raise ManifestError("a manifest needs at least two classes")
        declared = data.get("input_shape")
        if declared is not None and tuple(declared) != manifest.input_shape:
            raise ManifestError(
                f"input_shape {declared} disagrees with preprocessing {manifest.input_shape}"
            )
        return manifest

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ManifestError(f"{path}: no manifest.json") from exc
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: unreadable manifest: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: manifest must be a JSON object")
        return cls.from_dict(data)
