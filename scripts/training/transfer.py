"""`--init-from TASK[:VERSION]`: start a small-dataset model from another shipped model's
convolutional backbone (weights copied layer by layer while the shapes agree; the new head,
sized for the new classes, starts fresh).

    source = find_source(Path("trained"), "cifar10:2")   # ModelVersion
    copied = copy_backbone(model, source)                # names of the layers copied
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from serve.errors import ModelNotFound, VersionNotFound
from serve.repository import ModelVersion, resolve

if TYPE_CHECKING:
    import keras


class TransferError(ValueError):
    """The source cannot seed this model."""


def find_source(repository: Path, spec: str) -> ModelVersion:
    """`TASK` (its newest version) or `TASK:VERSION` in `repository`."""
    name, _, number = spec.partition(":")
    try:
        version = int(number) if number else None
    except ValueError:
        raise TransferError(f"--init-from {spec!r}: give TASK or TASK:VERSION") from None
    try:
        return resolve(repository, name, version)
    except (ModelNotFound, VersionNotFound) as exc:
        raise TransferError(f"--init-from {spec!r}: {exc}") from None


def copy_backbone(model: keras.Model, source: ModelVersion) -> list[str]:
    """Copy the source's weights into `model`, layer by layer in order among the layers that have
    weights, until the first layer whose shapes differ (the classifier); returns the layers
    copied. Raises TransferError when not even the first layer fits."""
    from serve.loader import keras_model  # TensorFlow: only once training is under way

    try:
        donor = keras_model(source)
    except (FileNotFoundError, ValueError) as exc:
        raise TransferError(f"cannot rebuild {source.path}: {exc}") from exc
    if tuple(donor.input_shape[-1:]) != tuple(model.input_shape[-1:]):
        raise TransferError(
            f"{source.name} v{source.version} takes {donor.input_shape[-1]} channels, "
            f"this model {model.input_shape[-1]}"
        )
    targets = [layer for layer in model.layers if layer.weights]
    donors = [layer for layer in donor.layers if layer.weights]
    copied: list[str] = []
    for target, giver in zip(targets[:-1], donors[:-1], strict=False):  # never the classifier
        shapes = [tuple(w.shape) for w in target.weights]
        if type(target) is not type(giver) or shapes != [tuple(w.shape) for w in giver.weights]:
            break
        target.set_weights([w.numpy() for w in giver.weights])
        copied.append(target.name)
    if not copied:
        raise TransferError(
            f"{source.name} v{source.version} ({source.manifest.architecture}) shares no leading "
            "layer with this architecture; use the same --arch family"
        )
    return copied
