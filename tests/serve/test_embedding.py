"""Embeddings over every API of a real clfserve (ours, KServe v2 gRPC + REST, TF Serving gRPC +
REST), each equal to the penultimate layer computed here by a Keras sub-model; NOT_FOUND, naming
the conversion command, for a version exported without the signature."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.utils import InferenceServerException

from serve.client import Client
from serve.embedding import EmbeddingNotFound, VersionBatcher
from serve.errors import ModelNotFound
from serve.loader import SavedModelClassifier, load
from serve.manifest import Manifest
from serve.manifest_entries import Embedding
from serve.preprocess import preprocess_bytes
from tests.images import encode, gray_pixels, rgb_pixels
from tests.serve.conftest import ServerThread, make_settings
from tests.serve.test_runtime import make_version

RNG = np.random.default_rng(19)
GRAY = [encode(gray_pixels(label, RNG)) for label in ("dark", "light", "dark")]
RGB = [encode(rgb_pixels(label, RNG)) for label in ("red", "blue")]
CASES = [("gray", GRAY), ("rgb", RGB)]


def strip_embedding(version: Path) -> None:
    """Make `version` look exported before the signature existed (serving_default only)."""
    loaded = tf.saved_model.load(str(version))
    old = version.parent / f".old-{version.name}"
    serving = {"serving_default": loaded.signatures["serving_default"]}
    tf.saved_model.save(loaded, str(old), signatures=serving)
    for name in ("saved_model.pb", "variables", "fingerprint.pb"):
        target = version / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        (old / name).rename(target)
    shutil.rmtree(old)
    data = json.loads((version / "manifest.json").read_text())
    del data["embedding"]
    data.pop("artefacts", None)
    (version / "manifest.json").write_text(json.dumps(data))


@pytest.fixture(scope="module")
def repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gray/1 and rgb/1 (with the signature) and old/1 (gray/1 without it)."""
    root = tmp_path_factory.mktemp("embedding-repository")
    for name in ("gray", "rgb"):
        shutil.copytree(model_repository / name, root / name)
    shutil.copytree(model_repository / "gray", root / "old")
    manifest = json.loads((root / "old" / "1" / "manifest.json").read_text())
    manifest["task"] = "old"
    (root / "old" / "1" / "manifest.json").write_text(json.dumps(manifest))
    strip_embedding(root / "old" / "1")
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerThread]:
    # LiteRT answers the probabilities; embeddings come from the SavedModel's signature.
    settings = make_settings(repository, rest_port=0, max_images=8, runtime="litert")
    running = ServerThread(settings).start()
    with Client(running.target) as client:
        client.wait_ready(60)
        for name, images in CASES:  # opens each version's embedding batcher (and its thread)
            client.embed(name, images[:1])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rest(server: ServerThread) -> str:
    assert server.app is not None and server.app.rest_port
    return f"127.0.0.1:{server.app.rest_port}"


def expected(repository: Path, name: str, images: list[bytes]) -> np.ndarray:
    """The input of the softmax Dense layer: model.json + the SavedModel's weights in Keras."""
    version = repository / name / "1"
    manifest = Manifest.read(version / "manifest.json")
    model = keras.models.model_from_json((version / "model.json").read_text())
    model.set_weights([w.numpy() for w in tf.saved_model.load(str(version)).weights])
    features = keras.Model(model.inputs[0], model.layers[-1].input)
    batch = np.stack([preprocess_bytes(image, manifest.preprocessing) for image in images])
    return np.asarray(features(batch, training=False))


@pytest.mark.parametrize(("name", "images"), CASES)
def test_our_api(server: ServerThread, repository: Path, name: str, images: list[bytes]):
    with Client(server.target) as client:
        answer = client.embed(name, images)
        probabilities = client.classify(name, images).predictions
    want = expected(repository, name, images)
    manifest = Manifest.read(repository / name / "1" / "manifest.json")
    assert manifest.embedding is not None
    assert answer.vectors.dtype == np.float32
    assert answer.vectors.shape == (len(images), manifest.embedding.dimension) == want.shape
    np.testing.assert_allclose(answer.vectors, want, atol=1e-5)
    assert (answer.model, answer.version, answer.layer) == (name, 1, manifest.embedding.layer)
    assert len(probabilities) == len(images)


@pytest.mark.parametrize(("name", "images"), CASES)
def test_kserve_grpc(server: ServerThread, repository: Path, name: str, images: list[bytes]):
    tensor = triton_grpc.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    outputs = [triton_grpc.InferRequestedOutput(n) for n in ("embedding", "probabilities")]
    client = triton_grpc.InferenceServerClient(server.target)
    try:
        both = client.infer(name, [tensor], outputs=outputs)
        alone = client.infer(name, [tensor], outputs=outputs[:1])
        meta = client.get_model_metadata(name)
    finally:
        client.close()
    want = expected(repository, name, images)
    np.testing.assert_allclose(both.as_numpy("embedding"), want, atol=1e-5)
    np.testing.assert_allclose(alone.as_numpy("embedding"), want, atol=1e-5)
    assert alone.as_numpy("probabilities") is None
    assert both.as_numpy("probabilities").shape[0] == len(images)
    assert [(o.name, list(o.shape)) for o in meta.outputs][1] == ("embedding", [-1, want.shape[1]])


@pytest.mark.parametrize(("name", "images"), CASES)
def test_kserve_rest(
    server: ServerThread, repository: Path, rest: str, name: str, images: list[bytes]
):
    tensor = triton_http.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    client = triton_http.InferenceServerClient(rest)
    try:
        binary = client.infer(name, [tensor], outputs=[triton_http.InferRequestedOutput(
            "embedding")])  # fmt: skip
        as_json = client.infer(name, [tensor], outputs=[triton_http.InferRequestedOutput(
            "embedding", binary_data=False)])  # fmt: skip
    finally:
        client.close()
    want = expected(repository, name, images)
    np.testing.assert_allclose(binary.as_numpy("embedding"), want, atol=1e-5)
    np.testing.assert_allclose(as_json.as_numpy("embedding"), want, atol=1e-5)


@pytest.mark.parametrize(("name", "images"), CASES)
def test_tfserving_grpc_and_rest(
    server: ServerThread, repository: Path, rest: str, name: str, images: list[bytes]
):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "embedding"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=60)
        asked = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        asked.model_spec.name = name
        meta = stub.GetModelMetadata(asked, timeout=60)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(signatures)
    listed = signatures.signature_def["embedding"].outputs["embedding"].tensor_shape.dim
    output = response.outputs["embedding"]
    assert output.dtype == types_pb2.DT_FLOAT and response.model_spec.signature_name == "embedding"
    want = expected(repository, name, images)
    assert [d.size for d in listed] == [-1, want.shape[1]]
    np.testing.assert_allclose(tf.make_ndarray(output), want, atol=1e-5)
    body = {
        "signature_name": "embedding",
        "instances": [{"b64": base64.b64encode(image).decode()} for image in images],
    }
    answer = httpx.post(f"http://{rest}/v1/models/{name}:predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(np.array(answer.json()["predictions"]), want, atol=1e-5)


def test_a_version_without_the_signature_is_not_found(server: ServerThread, rest: str):
    command = "scripts/convert.py"
    with Client(server.target) as client:
        assert client.classify("old", GRAY[:1]).predictions  # it classifies as before
        with pytest.raises(ModelNotFound, match=command):
            client.embed("old", GRAY[:1])
    tensor = triton_grpc.InferInput("images", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(GRAY[:1], dtype=np.object_))
    client = triton_grpc.InferenceServerClient(server.target)
    try:
        with pytest.raises(InferenceServerException, match=command) as raised:
            client.infer("old", [tensor], outputs=[triton_grpc.InferRequestedOutput("embedding")])
        assert raised.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "old"
    request.model_spec.signature_name = "embedding"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(GRAY[:1], dtype=tf.string))
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Predict(request, timeout=60)
    assert failed.value.code() is grpc.StatusCode.NOT_FOUND
    assert command in (failed.value.details() or "")
    instance = {"b64": base64.b64encode(GRAY[0]).decode()}
    body = {"signature_name": "embedding", "instances": [instance]}
    answer = httpx.post(f"http://{rest}/v1/models/old:predict", json=body, timeout=60)
    assert answer.status_code == 404 and command in answer.json()["error"]
    v2 = {"inputs": [{"name": "images_bytes", "datatype": "BYTES", "shape": [1],
                      "data": [base64.b64encode(GRAY[0]).decode()]}],
          "outputs": [{"name": "embedding"}]}  # fmt: skip
    answer = httpx.post(f"http://{rest}/v2/models/old/infer", json=v2, timeout=60)
    assert answer.status_code == 404 and command in answer.json()["error"]


def embedders() -> list[str]:
    """The threads of embedding batchers the tests below open (named after `tiny-v1`)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("tiny-v1-embed")]


def test_a_version_batcher_refuses_a_manifest_without_embedding(tmp_path: Path) -> None:
    """At once: no embedding batcher is opened and no SavedModel loaded for it."""
    version = make_version(tmp_path, artefact=True)
    assert version.manifest.embedding is None
    batcher = VersionBatcher(load(version, "litert"), version.path, name="tiny-v1")

    async def main() -> None:
        batcher.start()
        try:
            with pytest.raises(EmbeddingNotFound, match=f"scripts/convert.py {version.path}"):
                await batcher.embed(np.zeros((1, 12, 12, 1), np.float32), version.manifest)
            assert embedders() == []
        finally:
            await batcher.close()

    asyncio.run(main())


def test_first_embeddings_on_litert_share_one_tensorflow_batcher(tmp_path: Path) -> None:
    """Two embedding requests arrive while LiteRT's version still has no embedding batcher: the
    second waits for the SavedModel the first is loading, and both use the one batcher."""
    version = make_version(tmp_path, artefact=True)  # its SavedModel has the signature
    manifest = replace(version.manifest, embedding=Embedding(dimension=4))
    images = np.random.default_rng(4).random((2, 12, 12, 1), dtype=np.float32)
    want = SavedModelClassifier(str(version.path), manifest).embed(images)
    batcher = VersionBatcher(load(version, "litert"), version.path, name="tiny-v1")

    async def main() -> tuple[np.ndarray, np.ndarray]:
        batcher.start()
        try:
            answers = await asyncio.gather(
                batcher.embed(images[:1], manifest), batcher.embed(images[1:], manifest)
            )
            assert embedders() == ["tiny-v1-embed-0"]
            return answers
        finally:
            await batcher.close()

    first, second = asyncio.run(main())
    np.testing.assert_allclose(np.concatenate([first, second]), want, atol=1e-6)
    assert embedders() == []
