"""How an architecture is trained: its recipe (epochs, schedule, optimiser) and augmentation.

recipe = Recipe(epochs=12, augment=Augment(flip=True, shift=0.125), tta_flip=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation, as the tutorials' ImageDataGenerator offered it."""

    flip: bool = False
    vertical_flip: bool = False  # for subjects with no up and down (cells under a microscope)
    shift: float = 0.0  # fraction of height/width
    rotation: float = 0.0  # fraction of a full turn
    zoom: float = 0.0
    translate: int = 0  # whole pixels, reflect-padded (the speed-run recipes' crop)
    alternate_flip: bool = False  # with flip: each image mirrored every other epoch, not by coin
    brightness: float = 0.0  # each image's pixels scaled by a factor in [1 - b, 1 + b]

    @property
    def any(self) -> bool:
        return (
            self.flip
            or self.vertical_flip
            or bool(self.shift or self.rotation or self.zoom or self.translate or self.brightness)
        )


@dataclass(frozen=True)
class Nesterov:
    """SGD with Nesterov momentum, faster batch-norm biases and lookahead weight averaging: a
    moving average of the weights (`lookahead_momentum` per step) replaces them every
    `lookahead_every` steps (0: off), and at the end of training."""

    momentum: float = 0.85
    bias_lr_scale: float = 64.0
    lookahead_every: int = 5
    lookahead_momentum: float = 0.85


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained by default; command-line flags override the numbers."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    schedule: str = "constant"  # constant | cosine | triangular
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    patience: int = 5
    augment: Augment = field(default_factory=Augment)
    tta_flip: bool = False  # export averages the prediction of the image and its mirror
    sgd: Nesterov | None = None  # None: Adam (AdamW with weight decay)
    keep_best: bool = True  # ship the best-val_accuracy epoch; False: the last (averaged) one
    precision: str = "float32"  # Keras dtype policy while training; the export is float32
