"""Manifest round trip and validation; repository scanning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve.errors import ManifestError, ModelNotFound, VersionNotFound
from serve.manifest import Manifest, Preprocessing
from serve.repository import resolve, scan


def _manifest(version: int = 1) -> Manifest:
    return Manifest(
        "toy", version, ("a", "b"), Preprocessing("rgb", (16, 16)), metrics={"test_accuracy": 0.9}
    )


def _version(root: Path, name: str, number: str, manifest: Manifest | None = None) -> Path:
    path = root / name / number
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    (manifest or _manifest(int(number) if number.isdigit() else 0)).write(path / "manifest.json")
    return path


def test_round_trip_keeps_the_stable_keys(tmp_path: Path):
    _manifest().write(tmp_path / "m.json")
    data = json.loads((tmp_path / "m.json").read_text())
    assert {"task", "version", "classes", "input_shape", "preprocessing", "metrics"} <= set(data)
    assert data["input_shape"] == [16, 16, 3]
    assert Manifest.read(tmp_path / "m.json") == _manifest()
    assert Manifest.read(tmp_path / "m.json").test_accuracy == 0.9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("classes"), "missing or has a bad key"),
        (lambda d: d.update(classes=["only"]), "at least two classes"),
        (lambda d: d["preprocessing"].update(color_mode="cmyk"), "color_mode"),
        (lambda d: d.update(input_shape=[1, 2, 3]), "disagrees"),
    ],
)
def test_malformed_manifests_are_refused(tmp_path: Path, change, message: str):
    data = _manifest().to_dict()
    change(data)
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        Manifest.read(tmp_path / "m.json")


def test_scan_finds_complete_integer_versions_only(tmp_path: Path):
    _version(tmp_path, "toy", "1")
    _version(tmp_path, "toy", "10")
    _version(tmp_path, "toy", ".tmp-abc")
    (tmp_path / "toy" / "3").mkdir()  # incomplete: no files yet
    broken = _version(tmp_path, "toy", "4")
    (broken / "manifest.json").write_text("{ not json")
    found = scan(tmp_path)
    assert [v.version for v in found["toy"]] == [1, 10]
    assert resolve(tmp_path, "toy").version == 10
    assert resolve(tmp_path, "toy", 1).version == 1
    with pytest.raises(VersionNotFound, match="available versions: 1, 10"):
        resolve(tmp_path, "toy", 3)
    with pytest.raises(ModelNotFound, match="known models: toy"):
        resolve(tmp_path, "other")
