"""The REST port against a real clfserve: KServe v2 (tritonclient.http and raw JSON), TensorFlow
Serving REST and plain upload (httpx, curl), each answer equal to the gRPC port's."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from serve.client import Client
from serve.preprocess import preprocess_bytes
from serve.repository import resolve
from tests.images import GRAY_CLASSES, RGB_CLASSES, encode, gray_pixels, rgb_pixels
from tests.serve.conftest import ServerThread, make_settings

RNG = np.random.default_rng(15)
DARK, LIGHT = (encode(gray_pixels(label, RNG)) for label in GRAY_CLASSES)
RED = encode(rgb_pixels("red", RNG))
CASES = [("gray", [DARK, LIGHT], GRAY_CLASSES), ("rgb", [RED], RGB_CLASSES)]


@pytest.fixture(scope="module")
def server(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    port_file = tmp_path_factory.mktemp("rest") / "rest-port"
    settings = make_settings(model_repository, rest_port=0, rest_port_file=port_file, max_images=8)
    running = ServerThread(settings).start()
    with Client(running.target) as client:
        client.wait_ready(60)
    assert running.app is not None and running.app.rest_port
    assert port_file.read_text() == f"{running.app.rest_port}\n"
    yield running
    running.stop()


@pytest.fixture(scope="module")
def url(server: ServerThread) -> str:
    assert server.app is not None
    return f"http://127.0.0.1:{server.app.rest_port}"


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def triton_client(url: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


def grpc_answer(server: ServerThread, model: str, images: list[bytes]) -> np.ndarray:
    with Client(server.target) as clf:
        return np.stack([p.probabilities for p in clf.classify(model, images).predictions])


def model_input(repository: Path, model: str, images: list[bytes]) -> np.ndarray:
    pre = resolve(repository, model).manifest.preprocessing
    return np.stack([preprocess_bytes(image, pre) for image in images]).astype(np.float32)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- KServe v2 ---------------------------------------------------------------------------------
def test_v2_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.get_server_metadata()["name"] == "clfserve"
    meta = triton_client.get_model_metadata("rgb")
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "images", "datatype": "FP32", "shape": [-1, 32, 32, 3]},
        {"name": "images_bytes", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 8]},  # the tiny net's pooling
    ]
    assert triton_client.get_model_metadata("gray", "1")["name"] == "gray"
    assert triton_client.is_model_ready("gray") and triton_client.is_model_ready("gray", "1")
    assert not triton_client.is_model_ready("gray", "7")
    assert not triton_client.is_model_ready("nope")


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(("model", "images", "classes"), CASES)
def test_v2_infer_equals_grpc(
    server: ServerThread,
    model_repository: Path,
    triton_client: triton.InferenceServerClient,
    model: str,
    images: list[bytes],
    classes: tuple[str, ...],
    binary: bool,
) -> None:
    expected = grpc_answer(server, model, images)
    encoded = triton.InferInput("images_bytes", [len(images)], "BYTES")
    encoded.set_data_from_numpy(np.array(images, dtype=np.object_))  # BYTES: binary only
    tensor = model_input(model_repository, model, images)
    fp32 = triton.InferInput("images", list(tensor.shape), "FP32")
    fp32.set_data_from_numpy(tensor, binary_data=binary)
    pixels = np.stack([np.asarray(_decode(image)) for image in images])
    uint8 = triton.InferInput("images", list(pixels.shape), "UINT8")
    uint8.set_data_from_numpy(pixels, binary_data=binary)
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    for tensor_input in (encoded, fp32, uint8):
        result = triton_client.infer(model, [tensor_input], outputs=wanted)
        np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)
        assert result.get_response()["model_version"] == "1"
        has_data = "data" in result.get_response()["outputs"][0]
        assert has_data is not binary
    top = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
    result = triton_client.infer(model, [encoded], outputs=[top], model_version="1")
    text = [
        [str(item, "utf-8") if isinstance(item, bytes) else item for item in row]
        for row in result.as_numpy("probabilities")
    ]  # JSON answers str, binary bytes
    best = [[item.split(":") for item in row] for row in text]
    for row, probabilities in zip(best, expected, strict=True):
        order = np.argsort(-probabilities, kind="stable")[:2]
        assert [(int(i), label) for _, i, label in row] == [(i, classes[i]) for i in order]


def _decode(image: bytes) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(image)))


def test_v2_json_bytes_and_nested_uint8(server: ServerThread, http: httpx.Client) -> None:
    expected = grpc_answer(server, "gray", [DARK, LIGHT])
    body = {
        "id": "r1",
        "inputs": [{
            "name": "images", "datatype": "BYTES", "shape": [2, 1],
            "data": [[b64(DARK)], [{"b64": b64(LIGHT)}]],
        }],
    }  # fmt: skip
    answer = http.post("/v2/models/gray/infer", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    doc = answer.json()
    assert doc["id"] == "r1" and doc["model_name"] == "gray" and doc["model_version"] == "1"
    assert doc["outputs"][0]["shape"] == [2, 2]
    np.testing.assert_array_equal(np.float32(doc["outputs"][0]["data"]).reshape(2, 2), expected)
    pixels = _decode(DARK)[np.newaxis].tolist()  # nested lists, as a JSON client writes them
    body = {
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28], "data": pixels}]
    }
    doc = http.post("/v2/models/gray/versions/1/infer", json=body).json()
    np.testing.assert_array_equal(np.float32(doc["outputs"][0]["data"]), expected[0])


def test_v2_binary_request_by_hand(server: ServerThread, http: httpx.Client) -> None:
    """The binary tensor data extension on the wire: JSON header, then the raw tensor bytes."""
    expected = grpc_answer(server, "gray", [LIGHT])
    raw = len(LIGHT).to_bytes(4, "little") + LIGHT
    header = json.dumps({
        "inputs": [{"name": "images_bytes", "datatype": "BYTES", "shape": [1],
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    answer = http.post(
        "/v2/models/gray/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.status_code == 200
    length = int(answer.headers["Inference-Header-Content-Length"])
    doc = json.loads(answer.content[:length])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    np.testing.assert_array_equal(np.frombuffer(answer.content[length:], "<f4"), expected[0])


# -- TensorFlow Serving REST -------------------------------------------------------------------
def test_tfserving_status_and_metadata(http: httpx.Client) -> None:
    ok = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    for path in ("/v1/models/gray", "/v1/models/gray/versions/1", "/v1/models/gray/labels/stable"):
        assert http.get(path).json() == {"model_version_status": [ok]}, path
    doc = http.get("/v1/models/rgb/metadata").json()
    assert doc["model_spec"] == {"name": "rgb", "version": "1", "signature_name": ""}
    signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = signature["inputs"]["images"]["tensor_shape"]["dim"]
    assert [int(d["size"]) for d in dims] == [-1, 32, 32, 3]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert http.get("/v1/models/rgb/versions/1/metadata").json() == doc


def test_tfserving_predict_row_and_columnar(
    server: ServerThread, model_repository: Path, http: httpx.Client
) -> None:
    expected = grpc_answer(server, "gray", [DARK, LIGHT]).tolist()
    rows = {"instances": [{"b64": b64(DARK)}, {"b64": b64(LIGHT)}]}
    assert http.post("/v1/models/gray:predict", json=rows).json() == {"predictions": expected}
    named = {"instances": [{"images": {"b64": b64(DARK)}}, {"images": {"b64": b64(LIGHT)}}]}
    answer = http.post("/v1/models/gray/labels/stable:predict", json=named).json()
    assert answer == {"predictions": expected}
    tensor = model_input(model_repository, "gray", [DARK, LIGHT]).tolist()
    columnar = {"signature_name": "serving_default", "inputs": {"images": tensor}}
    answer = http.post("/v1/models/gray/versions/1:predict", json=columnar).json()
    assert answer == {"outputs": expected}
    assert http.post("/v1/models/gray:predict", json={"inputs": tensor}).json() == answer


# -- plain upload ------------------------------------------------------------------------------
def test_upload_raw_body_and_multipart(server: ServerThread, http: httpx.Client) -> None:
    expected = grpc_answer(server, "gray", [DARK, LIGHT])
    answer = http.post(
        "/v1/models/gray/classify", content=DARK, headers={"Content-Type": "image/png"}
    ).json()
    best = int(np.argmax(expected[0]))
    assert answer["model"] == "gray" and answer["version"] == 1
    [only] = answer["predictions"]
    assert only["label"] == GRAY_CLASSES[best] and only["version"] == 1
    assert np.float32(only["confidence"]) == expected[0][best]
    assert [t["label"] for t in only["top_k"]] == [GRAY_CLASSES[best], GRAY_CLASSES[1 - best]]
    files = [("file", ("dark.png", DARK, "image/png")), ("file", ("light.png", LIGHT, "image/png"))]
    answer = http.post("/v1/models/gray/versions/1/classify?top_k=1", files=files).json()
    assert [p["file"] for p in answer["predictions"]] == ["dark.png", "light.png"]
    for item, probabilities in zip(answer["predictions"], expected, strict=True):
        assert item["label"] == GRAY_CLASSES[int(np.argmax(probabilities))]
        assert np.float32(item["confidence"]) == probabilities.max() and len(item["top_k"]) == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_upload(url: str, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(RED)
    command = ["curl", "-sS", "-F", f"file=@{image}", f"{url}/v1/models/rgb/classify"]
    answer = json.loads(subprocess.run(command, capture_output=True, check=True, timeout=60).stdout)
    assert answer["predictions"][0]["file"] == "red.png"
    assert answer["predictions"][0]["label"] in RGB_CLASSES
