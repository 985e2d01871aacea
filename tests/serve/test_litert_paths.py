"""LiteRT classifier edge paths: models that do not fit the manifest are refused at load, bad
batches are refused, interpreters per batch size are bounded, the thread count is chosen; and
the JSON log line of an exception. (Models as in test_runtime: tiny, random, built here.)"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from serve import litert
from serve.artefacts import LITERT_FILE
from serve.litert import EXACT_SIZES, LiteRTClassifier, chunk_sizes, default_threads
from serve.loader import load
from serve.logs import JsonFormatter
from tests.serve.test_runtime import CLASSES, make_version

Tiny = tuple[bytes, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """The flatbuffer, a batch of 70 model inputs, and TensorFlow's answers for it."""
    version = make_version(tmp_path_factory.mktemp("repo"), artefact=True)
    batch = np.random.default_rng(0).random((70, 12, 12, 1), dtype=np.float32)
    expected = load(version, "tensorflow").predict(batch)
    return (version.path / LITERT_FILE).read_bytes(), batch, expected


def test_a_model_that_does_not_fit_the_manifest_is_refused(tiny: Tiny) -> None:
    model, _, _ = tiny
    with pytest.raises(ValueError, match="outputs, not 2"):
        LiteRTClassifier(model, ("a", "b"), (12, 12, 1))
    with pytest.raises(ValueError, match="is not \\[N, \\*\\(28, 28, 1\\)\\]"):
        LiteRTClassifier(model, CLASSES, (28, 28, 1))


def test_a_model_with_two_outputs_is_refused() -> None:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 12, 12, 1], tf.float32)])
    def two(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"mean": tf.reduce_mean(images, [1, 2]), "max": tf.reduce_max(images, [1, 2])}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([two.get_concrete_function()])
    with pytest.raises(ValueError, match=r"^expected one input and one output, not 1/2$"):
        LiteRTClassifier(converter.convert(), CLASSES, (12, 12, 1))


def test_bad_batches_are_refused_and_an_empty_one_answered(tiny: Tiny) -> None:
    model, batch, _ = tiny
    classifier = LiteRTClassifier(model, CLASSES, (12, 12, 1), threads=1)
    with pytest.raises(
        ValueError, match="expected \\[N, \\*\\(12, 12, 1\\)\\], got \\[3, 12, 12\\]"
    ):
        classifier.predict(batch[:3, ..., 0])
    empty = classifier.predict(np.zeros((0, 12, 12, 1), np.float32))
    assert empty.shape == (0, len(CLASSES)) and empty.dtype == np.float32


def test_interpreters_per_size_are_bounded_and_answers_stay_right(tiny: Tiny) -> None:
    model, batch, expected = tiny
    classifier = LiteRTClassifier(model, CLASSES, (12, 12, 1), threads=1, max_interpreters=1)
    for size in (1, 3, 2, 1, 3):  # each new size evicts the one before
        np.testing.assert_allclose(classifier.predict(batch[:size]), expected[:size], atol=1e-5)
        assert list(classifier._slots) == [size]


def test_chunk_sizes() -> None:
    assert EXACT_SIZES == 8  # the expectations below are written for it
    assert [chunk_sizes(n) for n in (1, 5, 8)] == [[1], [5], [8]]
    assert chunk_sizes(9) == [8, 1] and chunk_sizes(24) == [16, 8] and chunk_sizes(37) == [32, 5]
    assert chunk_sizes(256) == [256] and chunk_sizes(300) == [256, 32, 8, 4]


def test_large_batches_run_in_chunks_on_a_few_interpreters(tiny: Tiny) -> None:
    """Every size from 1 to 70 answers as TensorFlow does, on interpreters of sizes 1-8 and
    powers of two only (not one per size)."""
    model, batch, expected = tiny
    classifier = LiteRTClassifier(model, CLASSES, (12, 12, 1), threads=1)
    for size in range(1, 71):
        np.testing.assert_allclose(classifier.predict(batch[:size]), expected[:size], atol=1e-5)
    assert set(classifier._slots) == {1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64}


def test_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(litert.THREADS_ENV, "3")
    assert default_threads(1) == 3 and default_threads(None) == 3
    monkeypatch.delenv(litert.THREADS_ENV)
    assert default_threads(litert.SINGLE_THREAD_BATCH) == 1
    assert default_threads(litert.SINGLE_THREAD_BATCH + 1) == max(1, os.cpu_count() or 1)


def test_json_log_line_of_an_exception() -> None:
    try:
        raise ValueError("broken model")
    except ValueError:
        record = logging.LogRecord("serve", logging.ERROR, __file__, 1, "load %s", ("x",), None)
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "error" and line["message"] == "load x"
    assert (
        line["exception"].startswith("Traceback")
        and "ValueError: broken model" in line["exception"]
    )
    assert Path(__file__).name in line["exception"]
