"""One loaded model version as the registry tracks it, and the `Handle` a request holds on it.

A `Handle` pins one available version from the start of a request to its end: the registry
unloads a version only once no handle holds it (its in-flight count is back to zero).

    with registry.acquire("mnist") as handle:   # a Handle on the newest available version
        probs = await handle.batcher.predict(x)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from serve.batching import Batcher
from serve.manifest import Manifest
from serve.versions import VersionInfo, VersionState


@dataclass(eq=False)
class LoadedVersion:
    """A version the registry has taken up: its state (loading -> available -> unloading, or
    failed with the reason), its batcher once loaded, and how many handles hold it.
    `fingerprint` (manifest mtime, SavedModel size) tells when a failed version's files changed."""

    name: str
    version: int
    fingerprint: tuple[int, int]
    manifest: Manifest | None
    state: VersionState = VersionState.LOADING
    reason: str = ""
    batcher: Batcher | None = None
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def info(self, labels: tuple[str, ...]) -> VersionInfo:
        """This version as the status calls show it, under the `labels` that point at it."""
        manifest = self.manifest
        extra: dict[str, Any] = {}
        if manifest is not None:
            extra = {
                "classes": manifest.classes,
                "preprocessing": manifest.preprocessing,
                "architecture": manifest.architecture,
                "test_accuracy": manifest.test_accuracy,
            }
        return VersionInfo(self.version, self.state, self.reason, labels, **extra)


class Handle:
    """One pinned, available version for the duration of a request. Use as a context manager."""

    def __init__(self, entry: LoadedVersion) -> None:
        assert entry.batcher is not None and entry.manifest is not None
        self._entry: LoadedVersion | None = entry
        self.name = entry.name
        self.version = entry.version
        self.manifest: Manifest = entry.manifest
        self.batcher: Batcher = entry.batcher
        entry.inflight += 1
        entry.idle.clear()

    def release(self) -> None:
        entry, self._entry = self._entry, None
        if entry is not None:
            entry.inflight -= 1
            if entry.inflight == 0:
                entry.idle.set()

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
