"""The server's probabilities equal the in-process model's, for every input form and both models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serve.client import Client, to_input
from serve.errors import InvalidInput, ModelNotReady, VersionNotFound
from serve.grpc import clf_pb2 as pb
from serve.grpc import clf_pb2_grpc
from serve.loader import load
from serve.prepare import ImageInput
from serve.preprocess import preprocess_bytes, preprocess_pixels
from serve.repository import resolve
from serve.versions import VersionState
from tests.images import GRAY_CLASSES, RGB_CLASSES, encode, gray_pixels, rgb_pixels
from tests.serve.test_tfserving import local_probabilities

CASES = [("gray", gray_pixels, GRAY_CLASSES), ("rgb", rgb_pixels, RGB_CLASSES)]


@pytest.mark.parametrize(("model", "make", "classes"), CASES)
def test_probabilities_match_in_process_model(
    client: Client, model_repository: Path, model: str, make, classes
) -> None:
    version = resolve(model_repository, model)
    local = load(version)
    pre = version.manifest.preprocessing
    rng = np.random.default_rng(7)
    pixels = [make(label, rng, (40, 36)) for label in classes]  # not the model size: resized
    images = [encode(p) for p in pixels]
    expected = local.predict(np.stack([preprocess_bytes(b, pre) for b in images]))
    model_inputs = [preprocess_pixels(p, pre) for p in pixels]

    by_image = client.classify(model, images, top_k=len(classes))
    by_pixels = client.classify(model, pixels)
    by_input = client.classify(model, model_inputs, preprocessed=True)

    for result in (by_image, by_pixels, by_input):
        assert (result.model, result.version, result.labels) == (model, 1, classes)
        got = np.stack([p.probabilities for p in result.predictions])
        np.testing.assert_allclose(got, expected, atol=1e-5)
    for prediction, row in zip(by_image.predictions, expected, strict=True):
        assert prediction.label == classes[int(np.argmax(row))]
        assert [label for label, _ in prediction.top_k] == [classes[i] for i in np.argsort(-row)]
        assert prediction.score == pytest.approx(float(row.max()), abs=1e-6)


def test_versions_and_labels(two_versions: Path, start_server) -> None:
    server = start_server(two_versions, version_policy="all")
    png = encode(gray_pixels("dark", np.random.default_rng(0)))
    expected = {v: local_probabilities(two_versions, "gray", v, [png])[0] for v in (1, 2)}
    assert np.abs(expected[1] - expected[2]).max() > 1e-3, "versions 1 and 2 must differ"
    with Client(server.target) as client:
        client.wait_ready(60)
        answers = {
            "default": client.classify("gray", [png]),
            "version 1": client.classify("gray", [png], version=1),
            "version 2": client.classify("gray", [png], version=2),
            "stable": client.classify("gray", [png], label="stable"),
            "previous": client.classify("gray", [png], label="previous"),
        }
        with pytest.raises(VersionNotFound, match="beta"):
            client.classify("gray", [png], label="beta")
        with pytest.raises(ModelNotReady, match="failed"):
            client.classify("gray", [png], version=3)  # failed to load
    versions = {asked: answer.version for asked, answer in answers.items()}
    assert versions == {
        "default": 2, "version 1": 1, "version 2": 2, "stable": 2, "previous": 1,
    }  # fmt: skip
    for asked, answer in answers.items():
        np.testing.assert_allclose(
            answer.predictions[0].probabilities, expected[answer.version], atol=1e-5, err_msg=asked
        )


def test_previous_label_needs_two_versions(client: Client) -> None:
    png = encode(gray_pixels("dark", np.random.default_rng(0)))
    with pytest.raises(VersionNotFound, match="previous"):
        client.classify("gray", [png], label="previous")


def test_list_and_get_model(client: Client, model_repository: Path) -> None:
    models = {m.name: m for m in client.list_models()}
    assert set(models) == {"gray", "rgb"}
    info = client.get_model("rgb")
    assert info.default_version == 1
    (version,) = info.versions
    assert version.state is VersionState.AVAILABLE
    assert version.classes == RGB_CLASSES
    assert version.input_shape == (32, 32, 3)
    assert version.preprocessing is not None and version.preprocessing.color_mode == "rgb"
    assert version.test_accuracy == resolve(model_repository, "rgb").manifest.test_accuracy
    assert "stable" in version.labels


def test_stream_answers_in_order_and_survives_errors(client: Client, server) -> None:
    import grpc

    rng = np.random.default_rng(3)
    good = encode(rgb_pixels("red", rng))
    messages = []
    for index in range(6):
        message = pb.ClassifyRequest(request_id=str(index))
        message.model_spec.name = "rgb" if index != 2 else "missing"
        message.inputs.add(image=good if index != 4 else b"not an image")
        messages.append(message)
    with grpc.insecure_channel(server.target) as channel:
        stub = clf_pb2_grpc.ClassificationServiceStub(channel)
        answers = list(stub.ClassifyStream(iter(messages), timeout=30))
    assert [a.request_id for a in answers] == [str(i) for i in range(6)]
    outcomes = [a.WhichOneof("outcome") for a in answers]
    assert outcomes == ["response", "response", "error", "response", "error", "response"]
    assert answers[2].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert answers[4].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "input 0" in answers[4].error.message
    assert answers[0].response.results[0].top_k[0].label == "red"


def test_client_rejects_unknown_input_types(client: Client) -> None:
    with pytest.raises(TypeError):
        client.classify("gray", [123])  # type: ignore[list-item]
    with pytest.raises(InvalidInput):
        client.classify("gray", [np.zeros((5, 5, 1), np.float32)], preprocessed=True)


def test_a_path_is_sent_as_the_file_it_names(tmp_path: Path) -> None:
    png = tmp_path / "digit.png"
    png.write_bytes(encode(gray_pixels("dark", np.random.default_rng(6))))
    assert to_input(png) == to_input(str(png)) == ImageInput(png.read_bytes())
