"""Runtime artefacts beside a SavedModel: converting, recording, checking and caching them.

The SavedModel stays the source of truth. A version's `model.tflite` is written by training
(or `scripts/convert.py`) and recorded in the manifest with its sha256, the converter's version
and the digest of the SavedModel it came from. A version with no record is converted on first
load into a cache keyed by that digest (`$CLFSERVE_RUNTIME_CACHE`, default
`~/.cache/clfserve/runtimes/<digest>/model.tflite`), once.

    entry = write_litert(version_dir, manifest)     # training / scripts/convert.py
    flatbuffer, origin = litert_model(version)      # serving: recorded, else cached conversion
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from serve.manifest import Manifest
from serve.manifest_entries import Artefact
from serve.repository import SAVED_MODEL_FILE, ModelVersion

log = logging.getLogger(__name__)
LITERT = "litert"
LITERT_FILE = "model.tflite"
CACHE_ENV = "CLFSERVE_RUNTIME_CACHE"


class ArtefactError(Exception):
    """A runtime artefact cannot be used; the message says why (missing, corrupt, stale...)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def saved_model_digest(version_dir: Path) -> str:
    """sha256 over `saved_model.pb` and every file under `variables/` (names and contents)."""
    digest = hashlib.sha256()
    files = [version_dir / SAVED_MODEL_FILE]
    variables = version_dir / "variables"
    if variables.is_dir():  # pragma: no branch - tf.saved_model.save always writes variables/
        files += sorted(p for p in variables.rglob("*") if p.is_file())
    for path in files:
        digest.update(path.relative_to(version_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def converter_version() -> str:
    return f"tensorflow {metadata.version('tensorflow')}"


def convert_litert(version_dir: Path, signature: str) -> bytes:
    """The SavedModel's serving signature as a LiteRT flatbuffer (float32, variables frozen).

    `TFLiteConverter.from_saved_model` keeps BatchNormalization's statistics as resource
    variables that the flatbuffer never initialises (every output NaN, and XNNPACK cannot take
    the graph); converting the signature's concrete function freezes every variable.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    function = loaded.signatures[signature]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)
    quiet = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # the converter logs its temporary files and renamed inputs at INFO
        logger.setLevel(logging.WARNING)
    try:
        return bytes(converter.convert())
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_litert(version_dir: Path, manifest: Manifest) -> Artefact:
    """Convert the version's SavedModel to `model.tflite` beside it; returns the manifest entry."""
    data = convert_litert(version_dir, manifest.signature.name)
    _write_atomic(version_dir / LITERT_FILE, data)
    return Artefact(
        file=LITERT_FILE,
        sha256=sha256_bytes(data),
        converter=converter_version(),
        source_sha256=saved_model_digest(version_dir),
    )


def with_litert(version_dir: Path, manifest: Manifest) -> Manifest:
    """`manifest` recording a freshly written `model.tflite` (the caller writes the manifest)."""
    entry = write_litert(version_dir, manifest)
    return replace(manifest, artefacts={**manifest.artefacts, LITERT: entry})


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "clfserve" / "runtimes"


def _recorded(version: ModelVersion, entry: Artefact) -> bytes:
    path = version.path / entry.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtefactError(f"{path} is recorded in the manifest but unreadable: {exc}") from exc
    if sha256_bytes(data) != entry.sha256:
        raise ArtefactError(f"{path} is corrupt (sha256 differs from the manifest's)")
    if entry.source_sha256 and entry.source_sha256 != saved_model_digest(version.path):
        raise ArtefactError(f"{path} was converted from another SavedModel (stale)")
    return data


def _cached(version: ModelVersion) -> tuple[bytes, str]:
    """The cached conversion (checked against its recorded sha256), else a new one."""
    folder = cache_root() / saved_model_digest(version.path)
    path, checksum = folder / LITERT_FILE, folder / f"{LITERT_FILE}.sha256"
    try:
        data = path.read_bytes()
        if sha256_bytes(data) == checksum.read_text().strip():
            return data, f"cache {path}"
        log.warning("%s is corrupt: converting again", path)
    except OSError:
        pass  # not cached yet
    log.info(
        "%s v%d has no %s: converting into %s", version.name, version.version, LITERT_FILE, folder
    )
    try:
        data = convert_litert(version.path, version.manifest.signature.name)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
        _write_atomic(checksum, sha256_bytes(data).encode())
    except Exception as exc:  # the converter raises many types; any failure means no artefact
        raise ArtefactError(f"conversion to LiteRT failed: {str(exc)[:300]}") from exc
    return data, f"converted into {path}"


def litert_model(version: ModelVersion) -> tuple[bytes, str]:
    """The version's LiteRT flatbuffer and where it came from.

    The manifest's recorded artefact when there is one (ArtefactError if it is missing,
    corrupt or stale: no silent re-conversion), else the cache, converting on the first load.
    """
    entry = version.manifest.artefacts.get(LITERT)
    if entry is not None:
        return _recorded(version, entry), str(version.path / entry.file)
    return _cached(version)
