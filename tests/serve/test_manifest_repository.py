"""Manifest round trip and validation; repository scanning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve.errors import ManifestError, ModelNotFound, VersionNotFound
from serve.manifest import Manifest, Preprocessing
from serve.manifest_entries import Artefact, Embedding, Signature
from serve.repository import resolve, scan


def _manifest(version: int = 1) -> Manifest:
    return Manifest(
        "toy", version, ("a", "b"), Preprocessing("rgb", (16, 16)), metrics={"test_accuracy": 0.9}
    )


def _version(root: Path, name: str, number: str, manifest: Manifest | None = None) -> Path:
    path = root / name / number
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    (manifest or _manifest(int(number) if number.isascii() and number.isdigit() else 0)).write(
        path / "manifest.json"
    )
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
        (lambda d: d.update(classes=["only"]), "^a manifest needs at least two classes$"),
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


def test_every_field_survives_a_round_trip(tmp_path: Path) -> None:
    """Non-default values everywhere, so no key can be lost or renamed on the way."""
    full = Manifest(
        task="toy",
        version=7,
        classes=("a", "b", "c"),
        preprocessing=Preprocessing(
            "grayscale",
            (16, 12),
            resize="pad",
            interpolation="nearest",
            scale=0.5,
            offset=-1.0,
            filters=("blur", "sharpen"),
        ),
        architecture="cnn",
        signature=Signature(name="sig", input="x", output="y"),
        metrics={"test_accuracy": 0.5},
        training={"epochs_run": 3},
        created="2026-01-02T03:04:05Z",
        artefacts={"litert": Artefact("model.tflite", "ab" * 32, "conv 1", "cd" * 32)},
    )
    full.write(tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert text.startswith('{\n  "schema": 1,\n  "task": "toy",')  # indented, in field order
    data = json.loads(text)
    assert data["input_shape"] == [16, 12, 1]
    assert data["preprocessing"] == {
        "color_mode": "grayscale", "size": [16, 12], "resize": "pad",
        "interpolation": "nearest", "scale": 0.5, "offset": -1.0, "filters": ["blur", "sharpen"],
    }  # fmt: skip
    assert data["artefacts"] == {
        "litert": {
            "file": "model.tflite", "sha256": "ab" * 32, "converter": "conv 1",
            "source_sha256": "cd" * 32,
        }
    }  # fmt: skip
    assert (data["architecture"], data["created"], data["training"]) == (
        "cnn", "2026-01-02T03:04:05Z", {"epochs_run": 3},
    )  # fmt: skip
    assert data["signature"] == {"name": "sig", "input": "x", "output": "y"}
    assert Manifest.read(tmp_path / "m.json") == full


def test_optional_keys_take_their_documented_defaults() -> None:
    manifest = Manifest.from_dict(
        {
            "task": "toy",
            "version": 1,
            "classes": ["a", "b"],
            "preprocessing": {"color_mode": "rgb", "size": [4, 6]},
            "artefacts": {"litert": {"file": "m.tflite", "sha256": "00"}},
        }
    )
    assert manifest.preprocessing == Preprocessing(
        "rgb", (4, 6), resize="stretch", interpolation="bilinear", scale=1 / 255, offset=0.0
    )
    assert manifest.preprocessing.filters == ()
    assert "filters" not in _manifest().to_dict()["preprocessing"]  # as written before filters
    assert manifest.input_shape == (4, 6, 3)
    assert (manifest.architecture, manifest.created, manifest.metrics) == ("unknown", "", {})
    assert manifest.training == {} and manifest.schema == 1 and manifest.test_accuracy is None
    assert manifest.signature == Signature("serving_default", "images", "probabilities")
    assert manifest.artefacts == {"litert": Artefact("m.tflite", "00", "", "")}
    assert "artefacts" not in _manifest().to_dict()  # absent when there are none


def test_embedding_labels_and_schema_survive_a_round_trip(tmp_path: Path) -> None:
    """The keys `test_every_field_survives_a_round_trip` leaves at their defaults."""
    full = Manifest(
        "toy",
        2,
        ("a", "b"),
        Preprocessing("rgb", (4, 4)),
        schema=2,
        embedding=Embedding(signature="emb", output="vec", dimension=64, layer="dense_1"),
        labels=("fast", "small"),
    )
    full.write(tmp_path / "m.json")
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["schema"] == 2
    assert data["embedding"] == {
        "signature": "emb", "output": "vec", "dimension": 64, "layer": "dense_1",
    }  # fmt: skip
    assert data["labels"] == ["fast", "small"]
    assert Manifest.read(tmp_path / "m.json") == full


def test_without_embedding_or_labels_the_keys_are_absent() -> None:
    data = _manifest().to_dict()
    assert "embedding" not in data and "labels" not in data
    manifest = Manifest.from_dict(data | {"embedding": {}, "labels": []})
    assert manifest.embedding is None and manifest.labels == ()


@pytest.mark.parametrize(
    ("preprocessing", "message"),
    [
        ({"color_mode": "rgb", "size": [4, 4], "resize": "crop"}, "resize must be one of"),
        ({"color_mode": "rgb", "size": [4, 4], "interpolation": "x"}, "interpolation must be"),
        ({"color_mode": "rgb", "size": [4, 0]}, r"size must be positive, not \(4, 0\)"),
        ({"color_mode": "rgb", "size": [4]}, "bad preprocessing section"),
        (
            {"color_mode": "rgb", "size": [4, 4], "filters": ["sharpen", "emboss"]},
            "unknown filter 'emboss'; known filters: sharpen, blur, edges, blur\\+sharpen",
        ),
        ({"color_mode": "rgb", "size": [4, 4], "filters": "sharpen"}, "must be a list of filter"),
    ],
)
def test_bad_preprocessing_is_refused_with_its_reason(preprocessing: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Preprocessing.from_dict(preprocessing)
    assert Preprocessing.from_dict({"color_mode": "rgb", "size": [1, 1]}).size == (1, 1)


def test_bad_artefact_entries_are_refused() -> None:
    data = _manifest().to_dict() | {"artefacts": {"litert": {"file": "m.tflite"}}}
    with pytest.raises(ManifestError, match="bad artefact entry"):
        Manifest.from_dict(data)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"signature": "emb"}, r"bad embedding entry: KeyError\('dimension'\)"),
        ({"dimension": "wide"}, "bad embedding entry: ValueError"),
        ({"dimension": [64]}, "bad embedding entry: TypeError"),
        ({"dimension": 0}, "embedding dimension must be positive, not 0"),
    ],
)
def test_bad_embedding_entries_are_refused(entry: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(_manifest().to_dict() | {"embedding": entry})


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no manifest.json"), ("{ not json", "unreadable manifest"), ("[1, 2]", "JSON object")],
)
def test_unreadable_manifest_files_say_why(tmp_path: Path, content: str | None, message: str):
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ManifestError, match=message):
        Manifest.read(tmp_path / "manifest.json")


def test_scan_finds_complete_integer_versions_only(tmp_path: Path):
    _version(tmp_path, "toy", "1")
    _version(tmp_path, "toy", "10")
    _version(tmp_path, "toy", ".tmp-abc")
    _version(tmp_path, "toy", "²")  # isdigit() but not a number int() reads
    _version(tmp_path, "toy", "٣")  # an Arabic-Indic 3: not a version directory either
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
