"""What the server reports about its models: each version's state, labels and manifest facts.

Plain data, built by the registry (`serve.registry`) and shown by every protocol's status call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from serve.manifest import Preprocessing


class VersionState(enum.Enum):
    LOADING = "loading"
    AVAILABLE = "available"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(frozen=True)
class VersionInfo:
    """What GetModel reports about one version."""

    version: int
    state: VersionState
    reason: str = ""
    labels: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    preprocessing: Preprocessing | None = None
    architecture: str = ""
    test_accuracy: float | None = None

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self.preprocessing.input_shape if self.preprocessing else None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    default_version: int | None
    versions: tuple[VersionInfo, ...]  # newest first
