"""The manifest's entries about what a version directory offers besides its classes and
preprocessing: the SavedModel signatures serving calls (`Signature`, `Embedding`) and the
runtime artefacts beside it (`Artefact`). `serve.manifest.Manifest` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve.errors import ManifestError


@dataclass(frozen=True)
class Signature:
    """The SavedModel signature serving calls: one float32 input, one probabilities output."""

    name: str = "serving_default"
    input: str = "images"
    output: str = "probabilities"


@dataclass(frozen=True)
class Embedding:
    """The SavedModel's second signature: the penultimate layer's vector (the input of the
    final Dense layer), float32 [N, dimension]. Absent from versions exported before it existed
    (`scripts/convert.py` adds it)."""

    signature: str = "embedding"
    output: str = "embedding"
    dimension: int = 0
    layer: str = ""  # the Keras layer whose output it is

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Embedding:
        try:
            embedding = cls(
                signature=str(data.get("signature", "embedding")),
                output=str(data.get("output", "embedding")),
                dimension=int(data["dimension"]),
                layer=str(data.get("layer", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"bad embedding entry: {exc!r}") from exc
        if embedding.dimension < 1:
            raise ManifestError(f"embedding dimension must be positive, not {embedding.dimension}")
        return embedding


@dataclass(frozen=True)
class Artefact:
    """A runtime's copy of the model beside the SavedModel (e.g. `model.tflite` for LiteRT).

    `source_sha256` is the SavedModel's digest it was converted from (see
    `serve.artefacts.saved_model_digest`): an artefact whose source differs is stale.
    """

    file: str
    sha256: str
    converter: str = ""
    source_sha256: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artefact:
        try:
            return cls(
                file=str(data["file"]),
                sha256=str(data["sha256"]),
                converter=str(data.get("converter", "")),
                source_sha256=str(data.get("source_sha256", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"bad artefact entry: {exc!r}") from exc
