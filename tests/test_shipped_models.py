"""Every shipped version in trained/ scores on its full test split what its manifest records."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import numpy as np
import pytest
from training.data import Split, find_root, load_split

from serve.loader import load
from serve.manifest import Preprocessing
from serve.repository import ModelVersion, scan
from tests.conftest import REPO_ROOT, SHARED_DATASETS

SHIPPED = [v for versions in scan(REPO_ROOT / "trained").values() for v in versions]


def task_of(version: ModelVersion) -> str:
    return str(version.manifest.training.get("task_spec", version.name))


@functools.lru_cache(maxsize=1)
def decoded_test_split(archive: Path, preprocessing: Preprocessing) -> Split:
    """The decoded test split, kept for the next version of the same task and preprocessing
    (the versions of one task run in a row on one worker: `xdist_group` below)."""
    return load_split(find_root(archive) / "test", preprocessing)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize(
    "version",
    [pytest.param(v, marks=pytest.mark.xdist_group(task_of(v))) for v in SHIPPED],
    ids=lambda v: f"{v.name}-{v.version}",
)
def test_recorded_test_accuracy_is_reproduced(version: ModelVersion):
    archive = SHARED_DATASETS / f"{task_of(version)}.tar.gz"
    if not archive.exists():
        pytest.skip(f"{archive} is absent")
    test = decoded_test_split(archive, version.manifest.preprocessing)
    assert test.classes == version.manifest.classes
    classifier = load(version)
    predicted = np.concatenate(
        [
            classifier.predict(test.images[start : start + 512]).argmax(axis=1)
            for start in range(0, len(test.images), 512)
        ]
    )
    accuracy = float(np.mean(predicted == test.labels))
    recorded = version.manifest.test_accuracy
    assert recorded is not None
    assert abs(accuracy - recorded) <= 0.001, (accuracy, recorded)


def shipped_files() -> list[Path]:
    """The files of trained/ that git ships (all of them outside a git checkout)."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "trained"], cwd=REPO_ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [f for f in (REPO_ROOT / "trained").rglob("*") if f.is_file()]
    return [REPO_ROOT / name for name in listing.decode().split("\0") if name]


def test_shipped_repository_is_within_budget():
    total = sum(f.stat().st_size for f in shipped_files() if f.exists())
    assert total <= 80 * 1024 * 1024, f"trained/ ships {total / 2**20:.1f} MB, over 80 MB"
