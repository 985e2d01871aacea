"""TensorFlow Serving's API on clfserve's port, driven by tensorflow-serving-api's own stubs."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serve.client import Client
from serve.grpc import tfserving_convert as convert
from serve.loader import load
from serve.preprocess import preprocess_bytes
from serve.repository import ModelVersion, resolve
from tests.images import GRAY_CLASSES, RGB_CLASSES, encode, gray_pixels, rgb_pixels
from tests.serve.conftest import ServerThread, make_settings, wait_for

State = get_model_status_pb2.ModelVersionStatus.State
CASES = [("gray", gray_pixels, GRAY_CLASSES), ("rgb", rgb_pixels, RGB_CLASSES)]
PNG = encode(gray_pixels("light", np.random.default_rng(5)))


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(model_repository, max_images=8, metrics_port=0)).start()
    with Client(running.target) as client:
        client.wait_ready(60)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as opened:
        yield opened


@pytest.fixture(scope="module")
def predict(channel: grpc.Channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def request(model: str, tensor: tf.Tensor | object, name: str = "images", **spec: object):
    message = predict_pb2.PredictRequest()
    message.model_spec.name = model
    message.model_spec.signature_name = "serving_default"
    for key, value in spec.items():
        if key == "version":
            message.model_spec.version.value = value  # type: ignore[assignment]
        else:
            setattr(message.model_spec, key, value)
    message.inputs[name].CopyFrom(tensor)
    return message


def probabilities(response: predict_pb2.PredictResponse) -> np.ndarray:
    return tf.make_ndarray(response.outputs["probabilities"])


@pytest.mark.parametrize(("model", "make", "classes"), CASES)
def test_predict_matches_native_api(predict, server, model_repository, model, make, classes):
    rng = np.random.default_rng(9)
    pixels = [make(label, rng, (40, 36)) for label in classes]
    images = [encode(p) for p in pixels]
    with Client(server.target) as native:
        expected = np.stack([p.probabilities for p in native.classify(model, images).predictions])
    pre = resolve(model_repository, model).manifest.preprocessing
    model_input = np.stack([preprocess_bytes(b, pre) for b in images])
    float_val = tf.make_tensor_proto(model_input)
    float_val.ClearField("tensor_content")
    float_val.float_val.extend(model_input.ravel().tolist())

    by_strings = predict.Predict(request(model, tf.make_tensor_proto(images)), timeout=30)
    by_content = predict.Predict(request(model, tf.make_tensor_proto(model_input)), timeout=30)
    by_float_val = predict.Predict(request(model, float_val), timeout=30)

    for response in (by_strings, by_content, by_float_val):
        assert response.model_spec.name == model and response.model_spec.version.value == 1
        assert response.model_spec.signature_name == "serving_default"
        assert list(response.outputs) == ["probabilities"]
        np.testing.assert_allclose(probabilities(response), expected, atol=1e-5)
    assert probabilities(by_strings).shape == (len(classes), len(classes))


def test_uint8_pixels_are_preprocessed(predict, server) -> None:
    pixels = np.stack([gray_pixels(label, np.random.default_rng(1)) for label in GRAY_CLASSES])
    with Client(server.target) as native:
        expected = native.classify("gray", list(pixels)).predictions
    int_val = tf.make_tensor_proto(pixels)  # as tensor_content; int_val is the other encoding
    int_val.ClearField("tensor_content")
    int_val.int_val.extend(pixels.ravel().tolist())
    for tensor in (tf.make_tensor_proto(pixels), int_val):
        response = predict.Predict(request("gray", tensor), timeout=30)
        np.testing.assert_allclose(
            probabilities(response), np.stack([p.probabilities for p in expected]), atol=1e-5
        )


def test_get_model_metadata(predict) -> None:
    message = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    message.model_spec.name = "rgb"
    response = predict.GetModelMetadata(message, timeout=30)
    assert response.model_spec.name == "rgb" and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    definition = signatures.signature_def["serving_default"]
    assert definition.method_name == "tensorflow/serving/predict"
    images, probs = definition.inputs["images"], definition.outputs["probabilities"]
    assert images.dtype == probs.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in images.tensor_shape.dim] == [-1, 32, 32, 3]
    assert [d.size for d in probs.tensor_shape.dim] == [-1, len(RGB_CLASSES)]


def test_metadata_of_a_version_without_embedding_has_one_signature(model_repository) -> None:
    """A manifest written before embeddings existed: only "serving_default" is listed."""
    manifest = resolve(model_repository, "gray").manifest
    assert manifest.embedding is not None
    listed = {}
    for case, entry in (("with", manifest.embedding), ("without", None)):
        plain = dataclasses.replace(manifest, embedding=entry)
        response = convert.metadata_response("gray", 1, plain, ["signature_def"])
        signatures = get_model_metadata_pb2.SignatureDefMap()
        assert response.metadata["signature_def"].Unpack(signatures)
        listed[case] = sorted(signatures.signature_def)
    assert listed == {"with": ["embedding", "serving_default"], "without": ["serving_default"]}


def test_get_model_status(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    message = get_model_status_pb2.GetModelStatusRequest()
    message.model_spec.name = "gray"
    (status,) = stub.GetModelStatus(message, timeout=30).model_version_status
    assert (status.version, status.state, status.status.error_code) == (1, State.AVAILABLE, 0)


def versioned_server(repository: Path) -> ServerThread:
    """A server on `two_versions` (gray 1 and 2 differ, 3 is broken) with policy "all"."""
    running = ServerThread(make_settings(repository, version_policy="all")).start()
    with Client(running.target) as client:
        client.wait_ready(60)
    return running


def local_probabilities(repository: Path, model: str, version: int, images: list[bytes]):
    """What `version` answers for `images`, computed in this process (no server)."""
    found = resolve(repository, model, version)
    pre = found.manifest.preprocessing
    return load(found).predict(np.stack([preprocess_bytes(b, pre) for b in images]))


@pytest.fixture(scope="module")
def versioned(two_versions: Path):
    running = versioned_server(two_versions)
    yield running
    running.stop()


def test_version_and_label_selection_and_states(versioned: ServerThread, two_versions) -> None:
    strings = tf.make_tensor_proto([PNG])
    with grpc.insecure_channel(versioned.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answered = {
            str(spec): stub.Predict(request("gray", strings, **spec), timeout=30)
            for spec in ({}, {"version": 1}, {"version": 2}, {"version_label": "stable"},
                         {"version_label": "previous"})
        }  # fmt: skip
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "gray"}), timeout=30
        )
    versions = {key: r.model_spec.version.value for key, r in answered.items()}
    assert versions == {
        "{}": 2,
        "{'version': 1}": 1,
        "{'version': 2}": 2,
        "{'version_label': 'stable'}": 2,
        "{'version_label': 'previous'}": 1,
    }
    by_version = {v: local_probabilities(two_versions, "gray", v, [PNG]) for v in (1, 2)}
    assert np.abs(by_version[1] - by_version[2]).max() > 1e-3, "versions 1 and 2 must differ"
    for key, response in answered.items():
        np.testing.assert_allclose(
            probabilities(response), by_version[versions[key]], atol=1e-5, err_msg=key
        )
    states = {s.version: (s.state, s.status.error_code) for s in status.model_version_status}
    assert states == {3: (State.END, 2), 2: (State.AVAILABLE, 0), 1: (State.AVAILABLE, 0)}
    broken = next(s for s in status.model_version_status if s.version == 3)
    assert broken.status.error_message


def gated_loader(gate: threading.Event):
    """A loader that holds every version in LOADING until `gate` is set."""

    def load_when_open(version: ModelVersion):
        assert gate.wait(60), "the test never opened the gate"
        return load(version)

    return load_when_open


def test_status_is_loading_then_available(model_repository: Path, start_server) -> None:
    gate = threading.Event()
    server = start_server(model_repository, loader=gated_loader(gate))
    message = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "gray"})
    with grpc.insecure_channel(server.target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)

        def states() -> list[tuple[int, int]]:
            try:
                answer = stub.GetModelStatus(message, timeout=5)
            except grpc.RpcError:  # not yet discovered
                return []
            return [(s.version, s.state) for s in answer.model_version_status]

        wait_for(lambda: states() == [(1, State.LOADING)])
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            predict.Predict(request("gray", tf.make_tensor_proto([PNG])), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        gate.set()
        wait_for(lambda: states() == [(1, State.AVAILABLE)])
