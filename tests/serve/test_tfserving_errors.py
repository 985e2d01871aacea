"""TF Serving API errors: its status codes, our limits and deadlines; the server goes on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serve.client import Client
from tests.images import encode, gray_pixels
from tests.serve.conftest import (
    ServerThread,
    check_expired_request_never_reaches_model,
    make_settings,
    metric,
)

PNG = encode(gray_pixels("light", np.random.default_rng(12)))
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
GOOD = np.full((1, 28, 28, 1), 0.5, np.float32)
NAN = GOOD.copy()
NAN[0, 1, 2, 0] = np.nan


def predict(*tensors: tuple[str, object], model: str = "gray", **spec: object):
    message = predict_pb2.PredictRequest()
    message.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            message.model_spec.version.value = value  # type: ignore[assignment]
        elif key == "output_filter":
            message.output_filter.extend(value)  # type: ignore[arg-type]
        else:
            setattr(message.model_spec, key, value)
    for name, value in tensors:
        message.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return message


def short_float_val() -> predict_pb2.PredictRequest:
    message = predict(("images", GOOD))
    tensor = message.inputs["images"]
    tensor.ClearField("tensor_content")
    tensor.float_val.extend([0.5] * 100)
    return message


def tensor(dtype: int, shape: list[int], **fields: object) -> tensor_pb2.TensorProto:
    """A TensorProto as a client may build it by hand (not through tf.make_tensor_proto)."""
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
    return tensor_pb2.TensorProto(
        dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), **fields
    )


def metadata(model: str = "gray", fields: tuple[str, ...] = ("signature_def",)):
    message = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    message.model_spec.name = model
    return message


def status(model: str = "gray", version: int | None = None):
    message = get_model_status_pb2.GetModelStatusRequest()
    message.model_spec.name = model
    if version is not None:
        message.model_spec.version.value = version
    return message


# (case id, method, request, expected code, text the details must contain)
BAD = [
    ("unknown model", "Predict", predict(("images", [PNG]), model="nope"), NOT_FOUND, "nope"),
    ("unknown version", "Predict", predict(("images", [PNG]), version=9), NOT_FOUND, "9"),
    (
        "unknown label",
        "Predict",
        predict(("images", [PNG]), version_label="beta"),
        INVALID,
        "Unrecognized servable version label: beta",
    ),
    (
        "unknown signature",
        "Predict",
        predict(("images", [PNG]), signature_name="classify"),
        INVALID,
        '"classify" not found',
    ),
    ("wrong input name", "Predict", predict(("pixels", [PNG])), INVALID, "missing ['images']"),
    (
        "extra input",
        "Predict",
        predict(("images", [PNG]), ("mask", [PNG])),
        INVALID,
        "extra ['mask']",
    ),
    (
        "unknown output",
        "Predict",
        predict(("images", [PNG]), output_filter=["logits"]),
        INVALID,
        "logits",
    ),
    ("float without batch", "Predict", predict(("images", GOOD[0])), INVALID, "[batch, height"),
    (
        "float of the wrong size",
        "Predict",
        predict(("images", np.zeros((1, 28, 27, 1), np.float32))),
        INVALID,
        "input 0",
    ),
    ("float_val count", "Predict", short_float_val(), INVALID, "needs 784"),
    (
        "tensor_content not whole floats",
        "Predict",
        predict(("images", tensor(types_pb2.DT_FLOAT, [1, 28, 28, 1], tensor_content=b"\0" * 7))),
        INVALID,
        "tensor_content is not a whole number",
    ),
    (
        "uint8 int_val over 255",
        "Predict",
        predict(("images", tensor(types_pb2.DT_UINT8, [1, 28, 28], int_val=[300] * 784))),
        INVALID,
        "DT_UINT8 values must lie in 0..255",
    ),
    (
        "uint8 without rows",
        "Predict",
        predict(("images", np.zeros((1, 784), np.uint8))),
        INVALID,
        "must be DT_UINT8 [batch, height, width(, channels)]",
    ),
    (
        "strings not a column",
        "Predict",
        predict(("images", [[PNG, PNG]])),
        INVALID,
        "DT_STRING images must be [N] or [N, 1]",
    ),
    (
        "strings fewer than the shape",
        "Predict",
        predict(("images", tensor(types_pb2.DT_STRING, [3], string_val=[PNG]))),
        INVALID,
        "has 1 strings; shape [3]",
    ),
    (
        "int32 tensor",
        "Predict",
        predict(("images", np.zeros((1, 28, 28, 1), np.int32))),
        INVALID,
        "DT_INT32",
    ),
    ("NaN in model input", "Predict", predict(("images", NAN)), INVALID, "NaN"),
    ("undecodable image", "Predict", predict(("images", [PNG, b"junk"])), INVALID, "input 1"),
    (
        "over the pixel limit",
        "Predict",
        predict(("images", [encode(np.zeros((200, 200), np.uint8))])),
        INVALID,
        "over the limit",
    ),
    ("too many images", "Predict", predict(("images", [PNG] * 9)), INVALID, "limit of 8"),
    (
        "oversize message",
        "Predict",
        predict(("images", [b"\0" * 700_000])),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "",
    ),
    ("metadata: no field", "GetModelMetadata", metadata(fields=()), INVALID, "metadata_field"),
    ("metadata: bad field", "GetModelMetadata", metadata(fields=("graph",)), INVALID, "graph"),
    ("metadata: unknown model", "GetModelMetadata", metadata("nope"), NOT_FOUND, "nope"),
    ("status: unknown model", "GetModelStatus", status("nope"), NOT_FOUND, "nope"),
    ("status: unknown version", "GetModelStatus", status(version=4), NOT_FOUND, "4"),
]


@pytest.fixture(scope="module")
def strict_server(model_repository: Path) -> Iterator[ServerThread]:
    settings = make_settings(
        model_repository, max_images=8, max_pixels=10_000, max_message_mb=0.5, metrics_port=0
    )
    server = ServerThread(settings).start()
    with Client(server.target) as client:
        client.wait_ready(60)
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("method", "message", "code", "text"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_request_gets_tf_serving_status_then_server_answers(
    strict_server: ServerThread, method: str, message, code: grpc.StatusCode, text: str
) -> None:
    with grpc.insecure_channel(strict_server.target) as channel:
        stubs = {
            "Predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
            "GetModelMetadata": prediction_service_pb2_grpc.PredictionServiceStub(channel),
            "GetModelStatus": model_service_pb2_grpc.ModelServiceStub(channel),
        }
        with pytest.raises(grpc.RpcError) as caught:
            getattr(stubs[method], method)(message, timeout=30)
        details = caught.value.details() or ""
        assert caught.value.code() == code, details
        assert text in details and "Traceback" not in details
        answer = stubs["Predict"].Predict(predict(("images", [PNG])), timeout=30)
    assert answer.model_spec.version.value == 1


def counter(server: ServerThread, name: str, **labels: str) -> float:
    return metric(server, name, **labels)


def test_requests_are_counted_like_native_ones(strict_server: ServerThread) -> None:
    def requests(code: str, model: str = "rgb", version: str = "1") -> float:
        return counter(
            strict_server, "clfserve_requests_total", code=code, model=model, version=version
        )

    before = [requests("OK"), requests("INVALID_ARGUMENT"), requests("NOT_FOUND", "<unknown>", "")]
    with grpc.insecure_channel(strict_server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(3):
            stub.Predict(predict(("images", [PNG, PNG]), model="rgb"), timeout=30)
        for bad in (
            predict(("images", [b"junk"]), model="rgb"),  # refused by the data plane
            predict(("pixels", [PNG]), model="rgb"),  # refused before it
            predict(("images", [PNG]), model="nope"),
        ):
            with pytest.raises(grpc.RpcError):
                stub.Predict(bad, timeout=30)
    after = [requests("OK"), requests("INVALID_ARGUMENT"), requests("NOT_FOUND", "<unknown>", "")]
    assert [b - a for a, b in zip(before, after, strict=True)] == [3, 2, 1]


def _predict(channel: grpc.Channel, png: bytes, timeout: float) -> object:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(predict(("images", [png])), timeout=timeout)


def test_expired_request_never_reaches_the_model(
    model_repository: Path, start_server: Callable[..., ServerThread]
) -> None:
    check_expired_request_never_reaches_model(start_server, model_repository, _predict)
