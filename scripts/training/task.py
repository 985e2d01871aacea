"""What a task is: its preprocessing and the architectures it can train (the catalogue is in
`training.tasks`).

arch = task.arch("tutorial"); model = arch.build(task.preprocessing_for(arch).input_shape, 10)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from serve.manifest import Preprocessing
from training.architectures import Builder
from training.recipe import Recipe


class TaskError(ValueError):
    """Unknown task or architecture; the message lists the valid names."""


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Builder
    description: str
    recipe: Recipe = field(default_factory=Recipe)
    preprocessing: Preprocessing | None = None  # overrides the task's default
    # data-dependent initialisation from the training images, after building
    prepare: Callable[[keras.Model, np.ndarray], None] | None = None


@dataclass(frozen=True)
class Task:
    name: str
    preprocessing: Preprocessing
    architectures: dict[str, Architecture]
    default_arch: str
    classes: tuple[str, ...] | None = None  # None: taken from the data's class folders
    keras_dataset: str | None = None  # a keras.datasets loader for users with internet

    def arch(self, name: str | None) -> Architecture:
        chosen = name or self.default_arch
        if chosen not in self.architectures:
            valid = ", ".join(sorted(self.architectures))
            raise TaskError(
                f"unknown architecture {chosen!r} for task {self.name!r}; valid: {valid}"
            )
        return self.architectures[chosen]

    def preprocessing_for(self, arch: Architecture) -> Preprocessing:
        return arch.preprocessing or self.preprocessing
