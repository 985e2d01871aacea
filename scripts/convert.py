"""Bring existing versions up to date: the `embedding` signature, then the LiteRT artefact.

    python scripts/convert.py                         # every version under trained/ lacking one
    python scripts/convert.py trained/mnist/3 --force # re-convert one version's model.tflite

A version exported before the `embedding` SavedModel signature existed is re-exported with it:
the Keras model is rebuilt from `model.json`, given the SavedModel's own weights, and saved by
the training export (`training.export.save_saved_model`, both signatures over one copy of the
weights); its `serving_default` must answer as before on synthetic inputs, else nothing is
replaced and the command exits 1. The new SavedModel makes the old `model.tflite` stale, so it
is converted again.

Each artefact is checked against the SavedModel on synthetic inputs before the manifest
records it (atomically); one whose outputs differ by more than serve.runtime.TOLERANCE is
removed again and the command exits 1. Convert before serving the version: a running server
sees a changed version and reloads it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serve.artefacts import LITERT, with_litert  # noqa: E402
from serve.litert import LiteRTClassifier  # noqa: E402
from serve.loader import SavedModelClassifier, keras_model  # noqa: E402
from serve.manifest import Manifest  # noqa: E402
from serve.repository import (  # noqa: E402
    MANIFEST_FILE,
    SAVED_MODEL_FILE,
    ModelVersion,
    read_version,
    scan,
)
from serve.runtime import TOLERANCE, check_inputs, largest_difference  # noqa: E402


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Replace manifest.json atomically: a server rescanning never reads half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    os.replace(temporary, path)


def _swap_saved_model(source: Path, target: Path) -> None:
    """Move the SavedModel files of `source` over those of `target` (variables/ as a whole)."""
    old = target / f".old-{uuid.uuid4().hex[:12]}"
    old.mkdir()
    try:
        os.replace(target / "variables", old / "variables")
        os.replace(source / "variables", target / "variables")
        for name in (SAVED_MODEL_FILE, "fingerprint.pb"):
            if (source / name).is_file():
                os.replace(source / name, target / name)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def add_embedding(version: ModelVersion) -> tuple[ModelVersion | None, str]:
    """Re-export the version with the `embedding` signature; (updated version or None, text)."""
    from training.export import save_saved_model

    before = version.manifest
    model = keras_model(version)
    flip = bool(before.training.get("test_time_flip", False))
    staging = version.path / f".embedding-{uuid.uuid4().hex[:12]}"
    try:
        manifest = save_saved_model(model, staging, before, tta_flip=flip)
        old = SavedModelClassifier(str(version.path), before)
        new = SavedModelClassifier(str(staging), manifest)
        difference = largest_difference(new, old, check_inputs(version))
        if not difference <= TOLERANCE:
            return None, f"refused: the rebuilt model differs by {difference:.3g}"
        _swap_saved_model(staging, version.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The old model.tflite was converted from the old SavedModel: no longer recorded.
    artefacts = {name: entry for name, entry in manifest.artefacts.items() if name != LITERT}
    manifest = replace(manifest, artefacts=artefacts)
    write_manifest(version.path / MANIFEST_FILE, manifest)
    entry = manifest.embedding
    assert entry is not None
    text = (
        f"embedding signature added ({entry.dimension} floats from layer {entry.layer!r}); "
        f"serving_default unchanged (largest difference {difference:.2g})"
    )
    return replace(version, manifest=manifest), text


def convert(version: ModelVersion) -> tuple[bool, str]:
    """Write, check and record the version's LiteRT artefact; (ok, one-line description)."""
    manifest = with_litert(version.path, version.manifest)
    entry = manifest.artefacts[LITERT]
    artefact = version.path / entry.file
    reference = SavedModelClassifier(str(version.path), manifest)
    lite = LiteRTClassifier(artefact.read_bytes(), manifest.classes, manifest.input_shape)
    difference = largest_difference(lite, reference, check_inputs(version))
    size = f"{artefact.stat().st_size / 1024:.0f} KiB"
    if not difference <= TOLERANCE:
        artefact.unlink()
        return False, f"refused: differs from the SavedModel by {difference:.3g} ({size})"
    write_manifest(version.path / MANIFEST_FILE, manifest)
    return True, f"{entry.file} {size}, largest difference {difference:.2g}, {entry.converter}"


def targets(paths: list[Path]) -> list[ModelVersion]:
    found: list[ModelVersion] = []
    for path in paths:
        if (path / MANIFEST_FILE).is_file():  # a version directory
            found.append(read_version(path.parent.name, int(path.name), path))
        else:  # a repository
            found += [v for versions in scan(path).values() for v in versions]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[REPO_ROOT / "trained"])
    parser.add_argument("--force", action="store_true", help="re-convert recorded artefacts")
    args = parser.parse_args(argv)
    failed = 0
    for found in targets(args.paths):
        name = f"{found.name}/{found.version}"
        version: ModelVersion | None = found
        if found.manifest.embedding is None:
            version, text = add_embedding(found)
            print(f"{name}: {text}", flush=True)
            if version is None:
                failed += 1
                continue
        recorded = version.manifest.artefacts.get(LITERT)
        if recorded and (version.path / recorded.file).is_file() and not args.force:
            print(f"{name}: has {recorded.file} ({recorded.converter}); --force to redo")
            continue
        ok, text = convert(version)
        failed += not ok
        print(f"{name}: {text}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
