"""Which newer model version the watch daemon switches to, and what it keeps when it cannot."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from batch.backends import open_backend
from batch.watch.model_follow import newer_backend
from batch.watch.settings import WatchSettings


def _settings(repository: Path, tmp_path: Path, **extra: object) -> WatchSettings:
    return WatchSettings(
        inbox=tmp_path, out=tmp_path / "out", model="gray", repository=repository, **extra
    )


def _add_version(repository: Path, source: str, version: int) -> Path:
    """Publish a copy of `source/1` as gray/`version`, as training does: complete, then renamed."""
    staging = repository / "gray" / f".tmp-{version}"
    shutil.copytree(repository / source / "1", staging)
    target = repository / "gray" / str(version)
    staging.rename(target)
    return target


def test_a_newer_version_with_the_same_classes_is_opened(
    repository_copy: Path, tmp_path: Path
) -> None:
    current = open_backend("gray", repository=repository_copy)
    settings = _settings(repository_copy, tmp_path)
    assert newer_backend(settings, current) is None  # nothing newer yet
    _add_version(repository_copy, "gray", 2)
    fresh = newer_backend(settings, current)
    assert fresh is not None and fresh.version == 2 and fresh.labels == current.labels
    fresh.close()
    current.close()


def _label(version_dir: Path, *labels: str) -> None:
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["labels"] = list(labels)
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


def test_the_default_version_is_followed_not_the_newest(
    repository_copy: Path, tmp_path: Path
) -> None:
    _label(repository_copy / "gray" / "1", "default")
    current = open_backend("gray", repository=repository_copy)
    settings = _settings(repository_copy, tmp_path)
    _label(_add_version(repository_copy, "gray", 2))  # newer, without the label
    assert newer_backend(settings, current) is None
    _label(repository_copy / "gray" / "2", "default")  # the label moves on
    fresh = newer_backend(settings, current)
    assert fresh is not None and fresh.version == 2
    _label(repository_copy / "gray" / "2")  # and back: version 1 is the default again
    back = newer_backend(settings, fresh)
    assert back is not None and back.version == 1
    for backend in (back, fresh, current):
        backend.close()


def test_a_pinned_version_is_never_replaced(repository_copy: Path, tmp_path: Path) -> None:
    current = open_backend("gray", repository=repository_copy)
    _add_version(repository_copy, "gray", 2)
    assert newer_backend(_settings(repository_copy, tmp_path, version=1), current) is None
    current.close()


def test_a_newer_version_with_other_classes_is_refused(
    repository_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = open_backend("gray", repository=repository_copy)
    _add_version(repository_copy, "rgb", 2)  # blue/green/red instead of dark/light
    with caplog.at_level(logging.WARNING, logger="clfbatch.watch"):
        assert newer_backend(_settings(repository_copy, tmp_path), current) is None
    assert "version 2 has other classes; keeping version 1" in caplog.text
    current.close()


def test_an_unreadable_manifest_keeps_the_current_version(
    repository_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = open_backend("gray", repository=repository_copy)
    broken = _add_version(repository_copy, "gray", 2)
    (broken / "manifest.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert newer_backend(_settings(repository_copy, tmp_path), current) is None
    assert "gray/2/manifest.json: unreadable manifest" in caplog.text  # skipped, and said so
    current.close()


@pytest.mark.parametrize(
    ("damaged", "message"),
    [
        ("saved_model.pb", "cannot look for a new model version: Cannot parse file"),
        ("variables/variables.index", "cannot load the new model version"),
    ],
)
def test_a_broken_saved_model_keeps_the_current_version(
    repository_copy: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damaged: str,
    message: str,
) -> None:
    current = open_backend("gray", repository=repository_copy)
    broken = _add_version(repository_copy, "gray", 2)
    (broken / damaged).write_bytes(b"not what TensorFlow wrote")
    with caplog.at_level(logging.WARNING, logger="clfbatch.watch"):
        assert newer_backend(_settings(repository_copy, tmp_path), current) is None
    assert message in caplog.text
    current.close()
