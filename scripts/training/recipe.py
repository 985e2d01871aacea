"""How an architecture is trained: its recipe (epochs, schedule, optimiser) and augmentation.

recipe = Recipe(epochs=12, augment=Augment(flip=True, shift=0.125), tta_flip=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
    cutout: int = 0  # side of a square, anywhere (partly off the edge too), set to the mean pixel

    @property
    def any(self) -> bool:
        return (
            self.flip
            or self.vertical_flip
            or bool(self.shift or self.rotation or self.zoom or self.translate)
            or bool(self.brightness or self.cutout)
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
    # Keras dtype policy while training (see `training_precision`); the export is float32
    precision: str = "float32"


# CPU flags of native bfloat16 arithmetic (AVX512-BF16, AMX). Without them oneDNN emulates
# bfloat16 and it is slower than float32: the fast CIFAR-10 net measured 11.9 s per 1,024-image
# step under mixed_bfloat16 against 4.7 s in float32 on an Ice Lake Xeon (3 Dec 2026); on the
# AMX host of 2 December, mixed_bfloat16 ran it at 2-3 s.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """This machine's CPU feature flags (None where /proc/cpuinfo does not exist)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def training_precision(requested: str, flags: frozenset[str] | None) -> str:
    """The recipe's dtype policy, or float32 where bfloat16 would be emulated (`flags` None:
    unknown machine, keep the recipe's choice)."""
    if requested != "mixed_bfloat16" or flags is None or flags & NATIVE_BF16_FLAGS:
        return requested
    return "float32"
