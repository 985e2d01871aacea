"""The model repository on disk: `<root>/<model>/<integer version>/` directories.

A version directory counts only when complete (`manifest.json` and `saved_model.pb` present);
names that are not integers (such as the `.tmp-*` directories training writes into before its
atomic rename) are ignored, as TensorFlow Serving does.

    for version in scan(Path("trained"))["mnist"]: print(version.version, version.manifest.classes)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from serve.digits import ascii_digits
from serve.errors import ManifestError, ModelNotFound, VersionNotFound
from serve.manifest import Manifest
from serve.version_labels import STABLE, pick

log = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.json"
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass(frozen=True)
class ModelVersion:
    """One complete version directory and its manifest."""

    name: str
    version: int
    path: Path
    manifest: Manifest


def is_complete(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file() and (path / SAVED_MODEL_FILE).is_file()


def version_dirs(model_dir: Path) -> list[tuple[int, Path]]:
    """Integer-named sub-directories of one model, oldest first (complete or not)."""
    found = []
    for child in model_dir.iterdir() if model_dir.is_dir() else []:
        if child.is_dir() and ascii_digits(child.name):
            found.append((int(child.name), child))
    return sorted(found)


def read_version(name: str, version: int, path: Path) -> ModelVersion:
    """Read one version directory; raises ManifestError if it is incomplete or malformed."""
    if not is_complete(path):
        raise ManifestError(
            f"{path} is not a complete version (needs manifest.json and saved_model.pb)"
        )
    return ModelVersion(name, version, path, Manifest.read(path / MANIFEST_FILE))


def complete_versions(root: Path) -> dict[str, dict[int, Path]]:
    """Every complete version directory under `root` (manifest not yet read), by model name.

    The one walk of the repository: `scan` reads these, the server's registry loads them.
    """
    found: dict[str, dict[int, Path]] = {}
    if not root.is_dir():
        return found
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = {number: path for number, path in version_dirs(model_dir) if is_complete(path)}
        if versions:
            found[model_dir.name] = versions
    return found


def scan(root: Path) -> dict[str, list[ModelVersion]]:
    """Every complete, readable version under `root`, by model name, oldest version first.

    A malformed version is logged and skipped; it never hides the others.
    """
    models: dict[str, list[ModelVersion]] = {}
    for name, paths in complete_versions(root).items():
        versions = []
        for number, path in paths.items():
            try:
                versions.append(read_version(name, number, path))
            except ManifestError as exc:
                log.warning("skipping %s: %s", path, exc)
        if versions:
            models[name] = versions
    return models


def resolve(
    root: Path, name: str, version: int | None = None, label: str | None = None
) -> ModelVersion:
    """The requested version of a model: `version`, else the one `label` names, else the default
    one (`serve.version_labels`)."""
    models = scan(root)
    if name not in models:
        raise ModelNotFound(name, list(models))
    versions = {v.version: v for v in models[name]}
    if version is None:
        chosen = pick(label, [(n, v.manifest.labels) for n, v in versions.items()])
        if chosen is None:
            raise VersionNotFound(name, label or STABLE, sorted(versions))
        return versions[chosen]
    if version in versions:
        return versions[version]
    raise VersionNotFound(name, version, sorted(versions))
