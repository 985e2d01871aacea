"""Inference runtimes: selection, artefacts, cache, fallback, refusal, clfserve on LiteRT.

The models are tiny Keras networks with random weights (conv + BatchNormalization + dense),
exported as training does, built in a fraction of a second.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from serve import artefacts, runtime
from serve.artefacts import LITERT, LITERT_FILE, saved_model_digest, sha256_bytes, with_litert
from serve.client import Client
from serve.litert import LiteRTClassifier
from serve.loader import SavedModelClassifier, load
from serve.manifest import Manifest, Preprocessing
from serve.manifest_entries import Signature
from serve.repository import MANIFEST_FILE, ModelVersion, read_version
from serve.runtime import (
    MEASURE_SIZES,
    TOLERANCE,
    BySize,
    check_inputs,
    measure_sizes,
    measured_limit,
    with_runtime,
)
from serve.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("a", "b", "c")
HISTORY = {"loss": [1.0, 0.9], "val_loss": [1.0, 0.9], "accuracy": [0.5, 0.6],
           "val_accuracy": [0.5, 0.6]}  # fmt: skip


def make_version(root: Path, seed: int = 0, *, artefact: bool = False) -> ModelVersion:
    """`root/tiny/<seed + 1>`: a random conv + BN + dense classifier of 12x12 grayscale images."""
    import keras
    from training.export import save_saved_model

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(4, 3, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(CLASSES), activation="softmax", kernel_initializer="he_normal"),
    ])  # fmt: skip
    manifest = Manifest("tiny", seed + 1, CLASSES, Preprocessing("grayscale", (12, 12)))
    path = root / "tiny" / str(seed + 1)
    path.mkdir(parents=True)
    save_saved_model(model, path, manifest, tta_flip=False)
    if artefact:
        manifest = with_litert(path, manifest)
    manifest.write(path / MANIFEST_FILE)
    return read_version("tiny", seed + 1, path)


def record(version: ModelVersion, data: bytes, **changes: str) -> ModelVersion:
    """The version with `data` as its recorded model.tflite (fields overridable)."""
    (version.path / LITERT_FILE).write_bytes(data)
    entry = artefacts.Artefact(
        LITERT_FILE, sha256_bytes(data), "test", saved_model_digest(version.path)
    )
    manifest = replace(version.manifest, artefacts={LITERT: replace(entry, **changes)})
    manifest.write(version.path / MANIFEST_FILE)
    return read_version(version.name, version.version, version.path)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(artefacts.CACHE_ENV, str(cache))
    return cache


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_settings_take_the_runtime_from_the_flag_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings.from_args([]).runtime == "auto"
    monkeypatch.setenv("CLFSERVE_RUNTIME", "tensorflow")
    assert Settings.from_args([]).runtime == "tensorflow"
    assert Settings.from_args(["--runtime", "litert"]).runtime == "litert"
    with pytest.raises(SystemExit):  # "clfserve: error: --runtime: ...", exit 2
        Settings.from_args(["--runtime", "onnx"])


def test_clfbatch_passes_its_runtime_to_the_local_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import batch.backend_choice
    import batch.cli
    from serve.errors import ModelNotFound

    seen: list[str] = []

    def refuse(model: str, **options: str) -> None:
        seen.append(options["runtime"])
        raise ModelNotFound(model, [])

    monkeypatch.setattr(batch.backend_choice, "open_backend", refuse)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"")
    base = ["run", str(tmp_path / "images"), "--model", "tiny", "--out", str(tmp_path / "r.csv")]
    runner = CliRunner()
    runner.invoke(batch.cli.app, [*base, "--runtime", "litert"])
    runner.invoke(batch.cli.app, base, env={"CLFBATCH_RUNTIME": "tensorflow"})
    assert seen == ["litert", "tensorflow"]


def test_each_runtime_is_chosen_by_name_and_they_agree(tmp_path: Path) -> None:
    version = make_version(tmp_path, artefact=True)
    assert LITERT in version.manifest.artefacts
    tensorflow = load(version, "tensorflow")
    lite = load(version, "litert")
    assert isinstance(tensorflow, SavedModelClassifier)
    assert isinstance(lite, LiteRTClassifier)
    images = np.random.default_rng(3).random((64, 12, 12, 1), dtype=np.float32)
    expected = tensorflow.predict(images)
    for size in (1, 5, 64, 5):  # a new size, then a size seen before
        got = lite.predict(images[:size])
        assert np.abs(got - expected[:size]).max() <= TOLERANCE
        assert (got.argmax(1) == expected[:size].argmax(1)).all()
    auto = load(version, "auto")
    assert np.abs(auto.predict(images) - expected).max() <= TOLERANCE


def test_auto_measures_up_to_the_largest_batch_it_will_be_sent() -> None:
    assert measure_sizes(None) == MEASURE_SIZES
    assert measure_sizes(32) == (1, 8, 32)
    assert measure_sizes(100) == (1, 8, 32, 100)
    assert measure_sizes(1) == (1,)


def test_by_size_sends_small_batches_to_the_fast_runtime() -> None:
    class Fake:
        labels, input_shape = CLASSES, (1, 1, 1)

        def __init__(self, value: float) -> None:
            self.value = value

        def predict(self, batch: np.ndarray) -> np.ndarray:
            return np.full((len(batch), 3), self.value, np.float32)

    chosen = BySize(Fake(1.0), Fake(2.0), limit=8)
    assert chosen.predict(np.zeros((8, 1, 1, 1)))[0, 0] == 1.0
    assert chosen.predict(np.zeros((9, 1, 1, 1)))[0, 0] == 2.0


def test_a_corrupt_artefact_falls_back_to_tensorflow_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = make_version(tmp_path, artefact=True)
    path = version.path / LITERT_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO):
        classifier = load(version, "litert")
    assert isinstance(classifier, SavedModelClassifier)
    [warning] = warnings_of(caplog)
    assert "tiny v1: LiteRT refused, TensorFlow serves it" in warning and "corrupt" in warning
    images = check_inputs(version)
    assert classifier.predict(images).shape == (len(images), len(CLASSES))


def test_a_missing_or_stale_artefact_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = make_version(tmp_path, artefact=True)
    data = (version.path / LITERT_FILE).read_bytes()
    stale = record(version, data, source_sha256="0" * 64)
    assert isinstance(load(stale, "auto"), SavedModelClassifier)
    (version.path / LITERT_FILE).unlink()
    assert isinstance(load(stale, "litert"), SavedModelClassifier)
    first, second = warnings_of(caplog)
    assert "stale" in first and "unreadable" in second


def test_an_artefact_that_disagrees_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = make_version(tmp_path / "a")
    other = make_version(tmp_path / "b", seed=1, artefact=True)  # other weights
    wrong = record(version, (other.path / LITERT_FILE).read_bytes())  # checksums all correct
    classifier = load(wrong, "litert")
    assert isinstance(classifier, SavedModelClassifier)
    [warning] = warnings_of(caplog)
    assert "disagrees with the SavedModel" in warning


def test_a_recorded_artefact_that_is_no_flatbuffer_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = record(make_version(tmp_path), b"not a flatbuffer")  # its checksums are right
    assert isinstance(load(version, "litert"), SavedModelClassifier)
    [warning] = warnings_of(caplog)
    assert f"{version.path / LITERT_FILE} is not a usable LiteRT model" in warning


def test_a_failed_conversion_falls_back_and_caches_nothing(
    tmp_path: Path, private_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = make_version(tmp_path)
    tensorflow = load(version, "tensorflow")
    missing = Signature(name="no_such_signature")
    unconvertible = replace(version, manifest=replace(version.manifest, signature=missing))
    assert with_runtime(unconvertible, tensorflow, "litert") is tensorflow
    [warning] = warnings_of(caplog)
    assert "tiny v1: LiteRT refused, TensorFlow serves it: conversion to LiteRT failed" in warning
    assert "no_such_signature" in warning
    assert not list(private_cache.glob(f"*/{LITERT_FILE}"))


def test_unknown_runtimes_are_refused_and_tensorflow_is_kept_as_it_is(tmp_path: Path) -> None:
    version = ModelVersion(
        "tiny", 1, tmp_path, Manifest("tiny", 1, CLASSES, Preprocessing("grayscale", (12, 12)))
    )
    reference = object()
    with pytest.raises(ValueError, match=r"runtime must be one of .* not 'onnx'"):
        with_runtime(version, reference, "onnx")  # type: ignore[arg-type]
    assert with_runtime(version, reference, "tensorflow") is reference  # type: ignore[arg-type]


class Clock:
    """A stand-in for `time.perf_counter` that only the fake models below move."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Costed:
    """A model whose call at batch size n takes `seconds(n)` on `clock`; records the sizes."""

    labels: tuple[str, ...] = CLASSES
    input_shape = (1, 1, 1)

    def __init__(self, clock: Clock, seconds: dict[int, float]) -> None:
        self.clock, self.seconds, self.sizes = clock, seconds, set[int]()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.add(len(batch))
        self.clock.now += self.seconds[len(batch)]
        return np.zeros((len(batch), len(CLASSES)), np.float32)


def test_the_measured_limit_stops_at_the_first_loss_and_after_a_slow_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(runtime, "time", clock)
    sizes = (1, 8, 32)
    fast = Costed(clock, {1: 0.001, 8: 0.002, 32: 0.05})
    reference = Costed(clock, {1: 0.002, 8: 0.004, 32: 0.01})
    assert measured_limit(fast, reference, sizes) == 8  # lost at 32
    fast = Costed(clock, {1: 0.1, 8: 0.1, 32: 0.1})
    slow_reference = Costed(clock, {1: 0.2, 8: 0.2, 32: 0.2})  # over MEASURE_SLOWEST at 1
    assert measured_limit(fast, slow_reference, sizes) == 1
    assert fast.sizes == slow_reference.sizes == {1}  # larger sizes were not measured


def test_auto_keeps_tensorflow_when_litert_is_not_faster_at_batch_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    version = make_version(tmp_path, artefact=True)
    tensorflow = load(version, "tensorflow")
    monkeypatch.setattr(runtime, "time", Clock())  # a clock that never moves: every size a tie
    with caplog.at_level(logging.INFO, logger="serve.runtime"):
        assert with_runtime(version, tensorflow, "auto") is tensorflow
    assert "tiny v1: auto: TensorFlow was faster at batch 1; TensorFlow serves it" in [
        r.getMessage() for r in caplog.records
    ]


def test_a_version_without_artefact_is_converted_into_the_cache_once(
    tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = make_version(tmp_path)
    assert not version.manifest.artefacts
    assert isinstance(load(version, "litert"), LiteRTClassifier)
    [cached] = private_cache.glob(f"*/{LITERT_FILE}")
    assert cached.parent.name == saved_model_digest(version.path)

    def no_second_conversion(*args: object) -> bytes:
        raise AssertionError("converted again")

    monkeypatch.setattr(artefacts, "convert_litert", no_second_conversion)
    assert isinstance(load(version, "litert"), LiteRTClassifier)
    assert not (version.path / LITERT_FILE).exists()  # the repository is left alone
    monkeypatch.undo()
    monkeypatch.setenv(artefacts.CACHE_ENV, str(private_cache))
    cached.write_bytes(cached.read_bytes()[:100])  # a damaged cache entry is converted again
    assert isinstance(load(version, "litert"), LiteRTClassifier)
    assert cached.stat().st_size > 100


def test_training_writes_and_records_the_litert_artefact(tmp_path: Path) -> None:
    import keras
    from training.export import write_version

    model = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(len(CLASSES), activation="softmax")])  # fmt: skip
    manifest = Manifest("tiny", 0, CLASSES, Preprocessing("grayscale", (12, 12)))
    path, published = write_version(tmp_path, model, manifest, HISTORY, tta_flip=False)
    entry = published.artefacts[LITERT]
    assert sha256_bytes((path / entry.file).read_bytes()) == entry.sha256
    assert entry.source_sha256 == saved_model_digest(path)
    assert entry.converter.startswith("tensorflow ")
    version = read_version("tiny", published.version, path)
    assert isinstance(load(version, "litert"), LiteRTClassifier)


def test_manifests_without_artefacts_read_and_write_as_before(tmp_path: Path) -> None:
    version = make_version(tmp_path, artefact=True)
    data = version.manifest.to_dict()
    assert Manifest.from_dict(data) == version.manifest
    plain = replace(version.manifest, artefacts={})
    assert "artefacts" not in plain.to_dict()
    assert Manifest.from_dict(plain.to_dict()) == plain


@pytest.mark.slow
def test_clfserve_answers_on_litert(tmp_path: Path) -> None:
    version = make_version(tmp_path / "repository", artefact=True)
    port_file = tmp_path / "port"
    command = [
        sys.executable, "-m", "serve", "--repository", str(tmp_path / "repository"),
        "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
        "--metrics-port", "off", "--runtime", "litert", "--no-watch",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None and time.monotonic() < deadline, "clfserve did not start"
            time.sleep(0.05)
        images = check_inputs(version, 4)
        with Client(f"127.0.0.1:{port_file.read_text().strip()}") as client:
            client.wait_ready(60)
            result = client.classify("tiny", list(images), top_k=1, preprocessed=True)
        expected = load(version, "tensorflow").predict(images)
        got = np.stack([p.probabilities for p in result.predictions])
        assert np.abs(got - expected).max() <= TOLERANCE
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "tiny v1: LiteRT serves it" in output, output
