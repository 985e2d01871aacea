"""scripts/train.py end to end: a real subprocess writes real version directories."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from serve.manifest import Manifest
from serve.preprocess import preprocess_bytes
from tests.conftest import REPO_ROOT
from tests.images import write_dataset

TRAIN = [sys.executable, str(REPO_ROOT / "scripts" / "train.py")]


def train(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [*TRAIN, *map(str, args)], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


@pytest.fixture(scope="module")
def gray_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("gray"), "gray", per_class=20, test_per_class=5)


def accuracy_of(version: Path, test_dir: Path) -> float:
    """The SavedModel's accuracy on `test_dir/<class>/*.png`, computed here from the pixels
    (28x28 grayscale, pixel * scale + offset as the manifest says) without the training code."""
    pre = json.loads((version / "manifest.json").read_text())["preprocessing"]
    classes = sorted(p.name for p in test_dir.iterdir())
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((test_dir / name).glob("*.png")):
            pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
            images.append(pixels[:, :, np.newaxis] * pre["scale"] + pre["offset"])
            labels.append(index)
    loaded = tf.saved_model.load(str(version))
    batch = tf.constant(np.stack(images))
    probs = loaded.signatures["serving_default"](images=batch)["probabilities"].numpy()
    return float(np.mean(probs.argmax(axis=1) == np.array(labels)))


@pytest.mark.slow
def test_two_runs_write_versions_one_and_two(gray_data: Path, tmp_path: Path):
    repository = tmp_path / "trained"
    args = (
        "--task",
        "mnist",
        "--arch",
        "tiny",
        "--data",
        gray_data,
        "--epochs",
        "1",
        "--name",
        "digits",
        "--repository",
        repository,
    )
    first = train(*args)
    assert first.returncode == 0, first.stderr
    version = repository / "digits" / "1"
    manifest_data = json.loads((version / "manifest.json").read_text())
    for key, kind in [
        ("task", str),
        ("version", int),
        ("classes", list),
        ("input_shape", list),
        ("preprocessing", dict),
        ("metrics", dict),
        ("training", dict),
    ]:
        assert isinstance(manifest_data[key], kind), key
    assert manifest_data["task"] == "digits" and manifest_data["version"] == 1
    assert manifest_data["classes"] == ["dark", "light"]
    assert manifest_data["input_shape"] == [28, 28, 1]
    # The accuracy the manifest claims is the one the exported model has on the test folder.
    assert manifest_data["metrics"]["test_accuracy"] == pytest.approx(
        accuracy_of(version, gray_data / "test"), abs=1e-6
    )
    assert manifest_data["metrics"]["test_images"] == 10
    assert manifest_data["training"]["epochs_run"] == 1
    manifest = Manifest.read(version / "manifest.json")

    loaded = tf.saved_model.load(str(version))
    batch = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    probs = loaded.signatures["serving_default"](images=tf.constant(batch))["probabilities"].numpy()
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    rebuilt = keras.models.model_from_json((version / "model.json").read_text())
    assert rebuilt.count_params() == manifest.training["parameters"]
    assert (version / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (version / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])

    second = train(*args)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (repository / "digits").iterdir()) == ["1", "2"]
    assert Manifest.read(repository / "digits" / "2" / "manifest.json").version == 2


@pytest.mark.slow
def test_a_tar_gz_archive_is_accepted(gray_data: Path, tmp_path: Path):
    archive = tmp_path / "gray.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(gray_data, arcname="gray")
    env_cache = tmp_path / "cache"
    result = subprocess.run(
        [
            *TRAIN,
            "--task",
            "mnist",
            "--arch",
            "tiny",
            "--data",
            str(archive),
            "--epochs",
            "1",
            "--repository",
            str(tmp_path / "trained"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CLFSERVE_CACHE": str(env_cache), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    version = tmp_path / "trained" / "mnist" / "1"
    manifest = Manifest.read(version / "manifest.json")
    assert manifest.training["data"] == str(archive)
    assert manifest.classes == ("dark", "light")
    assert manifest.metrics["test_images"] == 10
    assert manifest.training["train_images"] + manifest.training["validation_images"] == 40
    (unpacked,) = (env_cache / "clfserve" / "datasets").iterdir()  # unpacked once, in the cache
    assert sorted(p.name for p in (unpacked / "gray" / "train").iterdir()) == ["dark", "light"]
    assert manifest.test_accuracy == pytest.approx(
        accuracy_of(version, gray_data / "test"), abs=1e-6
    )


def test_unreadable_training_images_are_skipped_and_counted(gray_data: Path, tmp_path: Path):
    from training.data import load_split

    from serve.manifest import Preprocessing

    split = tmp_path / "train"
    import shutil

    shutil.copytree(gray_data / "train", split)
    (split / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (split / "dark" / "notes.txt").write_text("not an image")
    loaded = load_split(split, Preprocessing("grayscale", (28, 28)))
    assert len(loaded.skipped) == 2
    assert len(loaded.labels) == 40


def _folder(
    tmp_path: Path, train_classes: list[str], test_classes: list[str], empty: str = ""
) -> Path:
    from tests.images import encode

    image = encode(np.zeros((28, 28), np.uint8))
    for split, classes in (("train", train_classes), ("test", test_classes)):
        for name in classes:
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            if name != empty:
                (folder / "x.png").write_bytes(image)
    return tmp_path / "data"


def test_bad_inputs_give_a_message_and_exit_2(tmp_path: Path):
    cases = [
        (("--task", "imagenet"), "unknown task 'imagenet'; valid: blood_cells, cifar10"),
        (
            ("--task", "mnist", "--arch", "vgg"),
            "unknown architecture 'vgg' for task 'mnist'; valid:",
        ),
        (("--task", "mnist", "--data", tmp_path / "missing"), "does not exist"),
        (("--task", "faces"), "give --data PATH"),
        (
            (
                "--task",
                "mnist",
                "--arch",
                "tiny",
                "--data",
                _folder(tmp_path / "a", ["x", "y"], ["x", "z"]),
            ),
            "train and test class folders differ",
        ),
        (
            (
                "--task",
                "mnist",
                "--arch",
                "tiny",
                "--data",
                _folder(tmp_path / "b", ["x", "y"], ["x", "y"], empty="y"),
            ),
            "is empty",
        ),
    ]
    for args, message in cases:
        result = train(*args, "--repository", tmp_path / "trained")
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "trained").exists()


def test_unwritable_repository_is_refused_before_training(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = train("--task", "mnist", "--arch", "tiny", "--data", tmp_path, "--repository", blocker)
    assert result.returncode == 2
    assert "not a writable directory" in result.stderr


@pytest.mark.slow
def test_filter_trains_on_filtered_images_and_writes_it_into_the_manifest(
    gray_data: Path, tmp_path: Path
):
    repository = tmp_path / "trained"
    result = train(
        "--task", "mnist", "--arch", "tiny", "--data", gray_data, "--epochs", "1",
        "--filter", "sharpen", "--repository", repository,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    version = repository / "mnist" / "1"
    data = json.loads((version / "manifest.json").read_text())
    assert data["preprocessing"]["filters"] == ["sharpen"]
    manifest = Manifest.read(version / "manifest.json")
    # the accuracy it claims is the model's on sharpened test images (what serving will send)
    classes = sorted(p.name for p in (gray_data / "test").iterdir())
    files = [
        (p, i) for i, c in enumerate(classes) for p in sorted((gray_data / "test" / c).iterdir())
    ]
    images = np.stack([preprocess_bytes(p.read_bytes(), manifest.preprocessing) for p, _ in files])
    loaded = tf.saved_model.load(str(version))
    probs = loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"]
    accuracy = float(np.mean(probs.numpy().argmax(axis=1) == [i for _, i in files]))
    assert data["metrics"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_an_unknown_filter_is_refused_with_the_known_ones(tmp_path: Path):
    result = train("--task", "mnist", "--filter", "emboss", "--repository", tmp_path / "t")
    assert result.returncode == 2
    message = " ".join(result.stderr.replace("│", " ").split())  # unwrap typer's error box
    assert "'emboss' is not one of 'sharpen', 'blur', 'edges', 'blur+sharpen'" in message
    assert not (tmp_path / "t").exists()
