"""Add runtime artefacts (LiteRT `model.tflite`) to existing versions and record them.

    python scripts/convert.py                         # every version under trained/ lacking one
    python scripts/convert.py trained/mnist/3 --force # re-convert one version

Each artefact is checked against the SavedModel on synthetic inputs before the manifest
records it (atomically); one whose outputs differ by more than serve.runtime.TOLERANCE is
removed again and the command exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serve.artefacts import LITERT, with_litert  # noqa: E402
from serve.litert import LiteRTClassifier  # noqa: E402
from serve.loader import SavedModelClassifier  # noqa: E402
from serve.manifest import Manifest  # noqa: E402
from serve.repository import MANIFEST_FILE, ModelVersion, read_version, scan  # noqa: E402
from serve.runtime import TOLERANCE, check_inputs, largest_difference  # noqa: E402


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Replace manifest.json atomically: a server rescanning never reads half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    os.replace(temporary, path)


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
    for version in targets(args.paths):
        name = f"{version.name}/{version.version}"
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
