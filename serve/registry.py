"""The model manager: loads, swaps and drops versions by a version policy; hands out handles.

TensorFlow Serving's vocabulary: the repository is the *source* (integer version directories),
`serve.loader` loads one version, this *manager* applies the policy availability-first (load and
warm the new version, make it the default, then drain and unload the old one), and a request
holds a `Handle` (`serve.version_handle`) pinning one version from start to end, so a version is
unloaded only after its in-flight requests finish. Everything here runs on the server's event
loop; loading runs in a worker thread.

    registry = ModelRegistry(Path("trained"), VersionPolicy.parse("latest:1"), make_batcher)
    await registry.sync()                      # at start, then on every repository change
    with registry.acquire("mnist", label="stable") as handle:
        probs = await handle.batcher.predict(x)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from serve.batching import Batcher
from serve.errors import ManifestError, ModelNotFound, ModelNotReady, VersionNotFound
from serve.loader import Classifier, load
from serve.manifest import Manifest
from serve.repository import (
    MANIFEST_FILE,
    SAVED_MODEL_FILE,
    ModelVersion,
    complete_versions,
    read_version,
)
from serve.settings import VersionPolicy
from serve.version_handle import Handle, LoadedVersion
from serve.version_labels import STABLE, assigned, pick
from serve.versions import ModelInfo, VersionState

log = logging.getLogger(__name__)
Loader = Callable[[ModelVersion], Classifier]
BatcherFactory = Callable[[str, int, Classifier], Batcher]


def _fingerprint(path: Path) -> tuple[int, int]:
    try:
        return ((path / MANIFEST_FILE).stat().st_mtime_ns, (path / SAVED_MODEL_FILE).stat().st_size)
    except OSError:  # pragma: no cover - a version deleted just after complete_versions saw it
        return (0, 0)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class ModelRegistry:
    """Every model's versions and their states; see the module docstring."""

    def __init__(
        self,
        root: Path,
        policy: VersionPolicy,
        make_batcher: BatcherFactory,
        *,
        loader: Loader = load,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.root = root
        self.policy = policy
        self._make_batcher = make_batcher
        self._loader = loader
        self._on_change = on_change
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self._labels: dict[Path, tuple[tuple[int, int], tuple[str, ...]]] = {}  # by fingerprint
        self._lock = asyncio.Lock()
        self.synced = False  # True after the first full sync

    # -- lifecycle -------------------------------------------------------------------------
    async def sync(self) -> None:
        """Bring the loaded versions in line with the repository and the version policy."""
        async with self._lock:
            on_disk = self._discover()
            for name in sorted(set(on_disk) | set(self._models)):
                await self._sync_model(name, on_disk.get(name, {}))
            self.synced = True

    def _discover(self) -> dict[str, dict[int, tuple[Path, tuple[int, int]]]]:
        return {
            name: {number: (path, _fingerprint(path)) for number, path in versions.items()}
            for name, versions in complete_versions(self.root).items()
        }

    async def _sync_model(
        self, name: str, on_disk: dict[int, tuple[Path, tuple[int, int]]]
    ) -> None:
        entries = self._models.setdefault(name, {})
        for version, entry in list(entries.items()):  # a changed or removed failure gets retried
            if entry.state is VersionState.FAILED and (
                version not in on_disk or on_disk[version][1] != entry.fingerprint
            ):
                del entries[version]
        while True:
            failed = {v for v, e in entries.items() if e.state is VersionState.FAILED}
            candidates = [v for v in on_disk if v not in failed]
            default = pick(None, [(v, self._labels_on_disk(*on_disk[v])) for v in candidates])
            want = self.policy.select(candidates, default)
            todo = [v for v in want if v not in entries]
            if not todo:
                break
            await self._load(name, todo[0], *on_disk[todo[0]])
        stale = [
            e for v, e in entries.items() if e.state is VersionState.AVAILABLE and v not in want
        ]
        await asyncio.gather(*(self._unload(entry) for entry in stale))
        if not entries:
            del self._models[name]

    def _labels_on_disk(self, path: Path, fingerprint: tuple[int, int]) -> tuple[str, ...]:
        """The labels a version's manifest carries (none if it is unreadable: loading says why)."""
        cached = self._labels.get(path)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        try:
            labels = Manifest.read(path / MANIFEST_FILE).labels
        except ManifestError:
            labels = ()
        self._labels[path] = (fingerprint, labels)
        return labels

    async def _load(
        self, name: str, version: int, path: Path, fingerprint: tuple[int, int]
    ) -> None:
        entries = self._models[name]
        entry = LoadedVersion(name, version, fingerprint, manifest=None)
        entries[version] = entry
        await self._changed()
        log.info("loading %s version %d from %s", name, version, path)
        try:
            model_version = read_version(name, version, path)
            entry.manifest = model_version.manifest
            classifier = await asyncio.to_thread(self._loader, model_version)
            if tuple(classifier.labels) != model_version.manifest.classes:
                raise ManifestError("the model's labels disagree with its manifest")
        except Exception as exc:  # a broken version must never take the server down
            entry.state, entry.reason = VersionState.FAILED, _reason(exc)
            log.error("%s version %d failed to load: %s", name, version, entry.reason)
            await self._changed()
            return
        entry.batcher = self._make_batcher(name, version, classifier)
        entry.batcher.start()
        entry.state = VersionState.AVAILABLE
        log.info("%s version %d is available", name, version)
        await self._changed()

    async def _unload(self, entry: LoadedVersion) -> None:
        entry.state = VersionState.UNLOADING
        await self._changed()
        log.info(
            "unloading %s version %d (%d in flight)", entry.name, entry.version, entry.inflight
        )
        if entry.inflight:
            await entry.idle.wait()
        if entry.batcher is not None:  # pragma: no branch - only loaded versions are unloaded
            await entry.batcher.close()
        self._models.get(entry.name, {}).pop(entry.version, None)
        log.info("%s version %d unloaded", entry.name, entry.version)
        await self._changed()

    async def close(self) -> None:
        """Drain and unload every version."""
        async with self._lock:
            live = [e for es in self._models.values() for e in es.values() if e.batcher]
            await asyncio.gather(*(self._unload(entry) for entry in live))
            self._models.clear()

    async def _changed(self) -> None:
        if self._on_change is not None:
            await self._on_change()

    # -- requests --------------------------------------------------------------------------
    def _available(self, name: str) -> list[LoadedVersion]:
        entries = self._models.get(name, {})
        ready = [e for e in entries.values() if e.state is VersionState.AVAILABLE]
        return sorted(ready, key=lambda e: e.version, reverse=True)

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Handle:
        """Pin one available version: `version`, `label`, or (neither) the default one."""
        entries = self._models.get(name)
        if not entries:
            if not self.synced:
                raise ModelNotReady(f"the server is still loading models; {name!r} is not up yet")
            raise ModelNotFound(name, list(self._models))
        available = self._available(name)
        if version is not None:
            entry = entries.get(version)
            if entry is None or entry.state is VersionState.UNLOADING:
                raise VersionNotFound(name, version, [e.version for e in available])
            if entry.state is not VersionState.AVAILABLE:
                raise ModelNotReady(f"{name} version {version} is {entry.state.value}")
            return Handle(entry)
        if not available:
            raise ModelNotReady(f"{name} has no available version yet")
        chosen = pick(label, _labelled(available))
        if chosen is None:
            raise VersionNotFound(name, label or STABLE, [e.version for e in available])
        return Handle(entries[chosen])

    # -- status ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._models)

    def available_names(self) -> list[str]:
        return [name for name in self.names() if self._available(name)]

    def model(self, name: str) -> ModelInfo:
        entries = self._models.get(name)
        if not entries:
            raise ModelNotFound(name, list(self._models))
        available = self._available(name)
        labels = assigned(_labelled(available))
        versions = tuple(
            entry.info(tuple(labels.get(entry.version, ())))
            for entry in sorted(entries.values(), key=lambda e: e.version, reverse=True)
        )
        return ModelInfo(name, pick(None, _labelled(available)), versions)

    def models(self) -> list[ModelInfo]:
        return [self.model(name) for name in self.names()]

    def loaded_counts(self) -> dict[str, int]:
        return {name: len(self._available(name)) for name in self.names()}


def _labelled(entries: list[LoadedVersion]) -> list[tuple[int, tuple[str, ...]]]:
    """(version, the labels its manifest carries) for `serve.version_labels`."""
    return [(e.version, e.manifest.labels if e.manifest else ()) for e in entries]
