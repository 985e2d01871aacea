"""The Open Inference Protocol v2 on clfserve's port, driven by tritonclient.grpc and its stubs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc

from serve.client import Client
from serve.preprocess import preprocess_bytes
from serve.repository import resolve
from tests.images import GRAY_CLASSES, RGB_CLASSES, encode, gray_pixels, rgb_pixels
from tests.serve.conftest import ServerThread, make_settings, wait_for
from tests.serve.test_tfserving import gated_loader

CASES = [("gray", gray_pixels, GRAY_CLASSES), ("rgb", rgb_pixels, RGB_CLASSES)]
PNG = encode(gray_pixels("dark", np.random.default_rng(4)))


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(model_repository, max_images=8, metrics_port=0)).start()
    with Client(running.target) as client:
        client.wait_ready(60)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    connected = triton.InferenceServerClient(server.target)
    yield connected
    connected.close()


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def native(server: ServerThread, model: str, inputs: list) -> np.ndarray:
    with Client(server.target) as clf:
        return np.stack([p.probabilities for p in clf.classify(model, inputs).predictions])


def image_input(images: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("gray") and client.is_model_ready("rgb", "1")
    assert client.is_model_ready("gray", "stable")
    assert not client.is_model_ready("gray", "7") and not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert server.name == "clfserve" and "classification" in server.extensions
    meta = client.get_model_metadata("rgb", as_json=True)
    assert (meta["name"], meta["versions"], meta["platform"]) == (
        "rgb",
        ["1"],
        "tensorflow_savedmodel",
    )
    assert meta["inputs"] == [
        {"name": "images", "datatype": "FP32", "shape": ["-1", "32", "32", "3"]},
        {"name": "images_bytes", "datatype": "BYTES", "shape": ["-1"]},
    ]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": ["-1", "3"]},
        {"name": "embedding", "datatype": "FP32", "shape": ["-1", "8"]},  # the tiny net's pooling
    ]


@pytest.mark.parametrize(("model", "make", "classes"), CASES)
def test_infer_matches_native_api(client, server, model_repository, model, make, classes) -> None:
    rng = np.random.default_rng(8)
    pixels = [make(label, rng, (30, 44)) for label in classes]
    images = [encode(p) for p in pixels]
    expected = native(server, model, images)
    pre = resolve(model_repository, model).manifest.preprocessing
    floats = triton.InferInput("images", [len(images), *pre.input_shape], "FP32")
    floats.set_data_from_numpy(np.stack([preprocess_bytes(b, pre) for b in images]))
    output = triton.InferRequestedOutput("probabilities")

    by_bytes = client.infer(model, [image_input(images)], request_id="a7")
    by_floats = client.infer(model, [floats], outputs=[output], model_version="1")
    named = triton.InferInput("images_bytes", [len(images)], "BYTES")  # as metadata lists it
    named.set_data_from_numpy(np.array(images, dtype=np.object_))
    by_name = client.infer(model, [named])

    for result in (by_bytes, by_floats, by_name):
        response = result.get_response()
        assert (response.model_name, response.model_version) == (model, "1")
        assert len(response.raw_output_contents) == 1  # raw in, raw out
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    assert by_bytes.get_response().id == "a7"


def test_classification_extension_returns_labels(client, server) -> None:
    images = [encode(rgb_pixels(label, np.random.default_rng(3))) for label in RGB_CLASSES]
    expected = native(server, "rgb", images)
    output = triton.InferRequestedOutput("probabilities", class_count=2)
    rows = client.infer("rgb", [image_input(images)], outputs=[output]).as_numpy("probabilities")
    assert rows.shape == (3, 2)
    for row, probs in zip(rows, expected, strict=True):
        best = np.argsort(-probs)[:2]
        parsed = [item.decode().split(":") for item in row]
        assert [int(index) for _, index, _ in parsed] == best.tolist()
        assert [label for _, _, label in parsed] == [RGB_CLASSES[i] for i in best]
        np.testing.assert_allclose([float(s) for s, _, _ in parsed], probs[best], atol=1e-5)


def contents_request(model: str, datatype: str, shape: list[int], **contents) -> object:
    message = service_pb2.ModelInferRequest(model_name=model)
    message.inputs.add(name="images", datatype=datatype, shape=shape)
    for key, values in contents.items():
        getattr(message.inputs[0].contents, key).extend(values)
    return message


def test_contents_in_contents_out_and_binary_override(stub, server, model_repository) -> None:
    pixels = np.stack([gray_pixels(label, np.random.default_rng(6)) for label in GRAY_CLASSES])
    expected = native(server, "gray", list(pixels))
    pre = resolve(model_repository, "gray").manifest.preprocessing
    model_input = np.stack([preprocess_bytes(encode(p), pre) for p in pixels])
    requests = [
        contents_request("gray", "UINT8", list(pixels.shape), uint_contents=pixels.ravel()),
        contents_request(
            "gray", "FP32", list(model_input.shape), fp32_contents=model_input.ravel()
        ),
        contents_request("gray", "BYTES", [2, 1], bytes_contents=[encode(p) for p in pixels]),
    ]
    for message in requests:
        response = stub.ModelInfer(message, timeout=30)
        assert not response.raw_output_contents
        (output,) = response.outputs
        assert (output.name, output.datatype, list(output.shape)) == (
            "probabilities",
            "FP32",
            [2, 2],
        )
        got = np.array(output.contents.fp32_contents, np.float32).reshape(2, 2)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    message = requests[0]
    message.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(message, timeout=30)
    np.testing.assert_allclose(
        triton.InferResult(response).as_numpy("probabilities"), expected, atol=1e-5
    )


def test_uint8_pixels_in_raw_input_contents(client, server) -> None:
    pixels = np.stack([gray_pixels(label, np.random.default_rng(2)) for label in GRAY_CLASSES])
    expected = native(server, "gray", list(pixels))
    tensor = triton.InferInput("images", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    result = client.infer("gray", [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)


def test_stream_answers_each_request_in_order(stub) -> None:
    good = contents_request("gray", "BYTES", [1], bytes_contents=[PNG])
    missing = contents_request("nope", "BYTES", [1], bytes_contents=[PNG])
    junk = contents_request("gray", "BYTES", [1], bytes_contents=[b"junk"])
    answers = list(stub.ModelStreamInfer(iter([good, missing, junk, good]), timeout=30))
    assert [bool(a.error_message) for a in answers] == [False, True, True, False]
    assert answers[1].error_message.startswith("NOT_FOUND")
    assert answers[2].error_message.startswith("INVALID_ARGUMENT: input 0")
    assert answers[3].infer_response.model_version == "1"


def test_tritonclient_stream(client: triton.InferenceServerClient) -> None:
    answers: list[tuple[object, object]] = []
    done = threading.Event()

    def callback(result: object, error: object) -> None:
        answers.append((result, error))
        if len(answers) == 3:
            done.set()

    client.start_stream(callback=callback)
    try:
        for request_id, model in (("1", "gray"), ("2", "nope"), ("3", "gray")):
            client.async_stream_infer(model, [image_input([PNG])], request_id=request_id)
        assert done.wait(30)
    finally:
        client.stop_stream()
    (first, ok1), (_, failed), (third, ok3) = answers
    assert ok1 is None and ok3 is None and failed is not None
    assert "NOT_FOUND" in str(failed)
    assert [r.get_response().id for r in (first, third)] == ["1", "3"]  # type: ignore[attr-defined]


def test_readiness_while_loading(model_repository: Path, start_server) -> None:
    gate = threading.Event()
    server = start_server(model_repository, loader=gated_loader(gate))
    client = triton.InferenceServerClient(server.target)
    try:
        wait_for(lambda: client.is_server_live())
        assert not client.is_server_ready() and not client.is_model_ready("gray")
        gate.set()
        wait_for(lambda: client.is_server_ready())
        assert client.is_model_ready("gray") and client.is_model_ready("rgb")
    finally:
        client.close()
