"""v2 API errors: status codes, limits, deadlines, versions and labels; the server goes on."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from serve.client import Client
from tests.images import encode, gray_pixels
from tests.serve.conftest import (
    BrokenClassifier,
    ServerThread,
    check_expired_request_never_reaches_model,
    make_settings,
)
from tests.serve.test_tfserving import local_probabilities, versioned_server
from tests.serve.test_tfserving_errors import counter

PNG = encode(gray_pixels("dark", np.random.default_rng(13)))
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
GOOD = np.full((1, 28, 28, 1), 0.5, np.float32)
NAN = GOOD.copy()
NAN[0, 0, 0, 0] = np.nan


def infer(
    datatype: str = "BYTES",
    shape: tuple[int, ...] = (1,),
    *,
    model: str = "gray",
    version: str = "",
    name: str = "images",
    raw: list[bytes] | None = None,
    **contents: object,
) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    tensor = message.inputs.add(name=name, datatype=datatype, shape=list(shape))
    for key, values in contents.items():
        getattr(tensor.contents, key).extend(values)
    message.raw_input_contents.extend(raw or [])
    return message


def raw_bytes(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def extra(message: service_pb2.ModelInferRequest, edit: Callable[[object], None]):
    edit(message)
    return message


VALID = infer(bytes_contents=[PNG])
# (case id, request, expected code, text the details must contain)
BAD = [
    ("unknown model", infer(model="nope", bytes_contents=[PNG]), NOT_FOUND, "nope"),
    ("unknown version", infer(version="9", bytes_contents=[PNG]), NOT_FOUND, "9"),
    ("unknown label", infer(version="beta", bytes_contents=[PNG]), NOT_FOUND, "beta"),
    ("wrong input name", infer(name="x", bytes_contents=[PNG]), INVALID, "missing ['images']"),
    (
        "two inputs",
        extra(infer(bytes_contents=[PNG]), lambda m: m.inputs.add(name="mask", datatype="BYTES")),
        INVALID,
        "expected 1 input but got 2",
    ),
    ("no inputs", service_pb2.ModelInferRequest(model_name="gray"), INVALID, "got 0"),
    ("INT32 datatype", infer("INT32", (1, 28, 28, 1), int_contents=[0] * 784), INVALID, "INT32"),
    ("FP32 without batch", infer("FP32", (28, 28, 1), raw=[GOOD.tobytes()]), INVALID, "[N, H, W"),
    (
        "FP32 of the wrong size",
        infer("FP32", (1, 28, 27, 1), raw=[np.zeros(756, np.float32).tobytes()]),
        INVALID,
        "input 0",
    ),
    ("FP32 count", infer("FP32", (1, 28, 28, 1), fp32_contents=[0.5] * 10), INVALID, "784"),
    ("raw FP32 bytes", infer("FP32", (1, 28, 28, 1), raw=[b"\0" * 7]), INVALID, "multiple of 4"),
    ("NaN", infer("FP32", (1, 28, 28, 1), raw=[NAN.tobytes()]), INVALID, "NaN"),
    (
        "UINT8 over 255",
        infer("UINT8", (1, 28, 28), uint_contents=[300] * 784),
        INVALID,
        "0..255",
    ),
    (
        "UINT8 without rows",
        infer("UINT8", (1, 784), raw=[bytes(784)]),
        INVALID,
        "must be UINT8 [N, H, W(, C)]",
    ),
    ("negative dimension", infer("BYTES", (-1,), bytes_contents=[PNG]), INVALID, "negative"),
    ("BYTES count", infer("BYTES", (3,), bytes_contents=[PNG]), INVALID, "[N] or [N, 1]"),
    ("raw BYTES truncated", infer(raw=[raw_bytes(PNG)[:-9] + b"\xff" * 4]), INVALID, "BYTES"),
    (
        "raw BYTES torn length",
        infer(raw=[raw_bytes(PNG) + b"\x01\x00"]),
        INVALID,
        "truncated BYTES element length",
    ),
    ("raw count", infer(raw=[raw_bytes(PNG), raw_bytes(PNG)]), INVALID, "raw_input_contents"),
    ("contents and raw", infer(raw=[raw_bytes(PNG)], bytes_contents=[PNG]), INVALID, "both"),
    ("undecodable image", infer("BYTES", (2,), bytes_contents=[PNG, b"junk"]), INVALID, "input 1"),
    (
        "over the pixel limit",
        infer(bytes_contents=[encode(np.zeros((200, 200), np.uint8))]),
        INVALID,
        "over the limit",
    ),
    ("too many images", infer("BYTES", (9,), bytes_contents=[PNG] * 9), INVALID, "limit of 8"),
    (
        "unknown output",
        extra(infer(bytes_contents=[PNG]), lambda m: m.outputs.add(name="logits")),
        INVALID,
        "logits",
    ),
    (
        "classification of 0",
        extra(
            infer(bytes_contents=[PNG]),
            lambda m: m.outputs.add(name="probabilities").parameters["classification"],
        ),
        INVALID,
        "classification",
    ),
    (
        "oversize message",
        infer(bytes_contents=[b"\0" * 700_000]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "",
    ),
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


@pytest.mark.parametrize(("message", "code", "text"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_request_gets_its_status_then_server_answers(
    strict_server: ServerThread, message, code: grpc.StatusCode, text: str
) -> None:
    with grpc.insecure_channel(strict_server.target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(message, timeout=30)
        details = caught.value.details() or ""
        assert caught.value.code() == code, details
        assert text in details and "Traceback" not in details
        assert stub.ModelInfer(VALID, timeout=30).model_version == "1"


def test_requests_are_counted_like_native_ones(strict_server: ServerThread) -> None:
    def requests(code: str, model: str = "gray", version: str = "1") -> float:
        return counter(
            strict_server, "clfserve_requests_total", code=code, model=model, version=version
        )

    before = [requests("OK"), requests("INVALID_ARGUMENT"), requests("NOT_FOUND", "<unknown>", "")]
    with grpc.insecure_channel(strict_server.target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(VALID, timeout=30)
        cases = {case[0]: case[1] for case in BAD}
        for bad in ("unknown model", "wrong input name", "undecodable image"):
            with pytest.raises(grpc.RpcError):
                stub.ModelInfer(cases[bad], timeout=30)
    after = [requests("OK"), requests("INVALID_ARGUMENT"), requests("NOT_FOUND", "<unknown>", "")]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 2, 1]


def test_tritonclient_sees_the_status(strict_server: ServerThread) -> None:
    client = triton.InferenceServerClient(strict_server.target)
    try:
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"junk"], dtype=np.object_))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("gray", [tensor])
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "input 0" in caught.value.message()
        with pytest.raises(InferenceServerException) as missing:
            client.get_model_metadata("nope")
        assert missing.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()


@pytest.fixture(scope="module")
def versioned(two_versions: Path):
    running = versioned_server(two_versions)
    yield running
    running.stop()


def test_versions_and_labels(versioned: ServerThread, two_versions: Path) -> None:
    by_version = {v: local_probabilities(two_versions, "gray", v, [PNG]) for v in (1, 2)}
    assert np.abs(by_version[1] - by_version[2]).max() > 1e-3, "versions 1 and 2 must differ"
    client = triton.InferenceServerClient(versioned.target)
    try:
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([PNG], dtype=np.object_))
        results = {
            asked: client.infer("gray", [tensor], model_version=asked)
            for asked in ("", "1", "2", "stable", "previous")
        }
        answered = {asked: r.get_response().model_version for asked, r in results.items()}
        assert answered == {"": "2", "1": "1", "2": "2", "stable": "2", "previous": "1"}
        for asked, result in results.items():
            np.testing.assert_allclose(
                result.as_numpy("probabilities"),
                by_version[int(answered[asked])],
                atol=1e-5,
                err_msg=asked,
            )
        assert client.get_model_metadata("gray").versions == ["2", "1"]
        assert client.is_model_ready("gray", "2") and client.is_model_ready("gray", "1")
        assert not client.is_model_ready("gray", "3")  # failed to load
    finally:
        client.close()


def _infer(channel: grpc.Channel, png: bytes, timeout: float) -> object:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    return stub.ModelInfer(infer(bytes_contents=[png]), timeout=timeout)


def test_expired_request_never_reaches_the_model(
    model_repository: Path, start_server: Callable[..., ServerThread]
) -> None:
    check_expired_request_never_reaches_model(start_server, model_repository, _infer)


def test_stream_internal_error_is_in_band_logged_and_the_stream_goes_on(
    model_repository: Path,
    start_server: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start_server(model_repository, loader=BrokenClassifier)
    with Client(server.target) as client:
        client.wait_ready(60)
    logs = caplog.at_level(logging.ERROR, logger="serve.grpc.kserve")
    with logs, grpc.insecure_channel(server.target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter([VALID, VALID]), timeout=30))
    public = "INTERNAL: internal error (RuntimeError); see the server log"
    assert [a.error_message for a in answers] == [public, public]
    logged = [r for r in caplog.records if r.name == "serve.grpc.kserve"]
    assert [r.getMessage() for r in logged] == ["stream request failed"] * 2
    assert all(r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in logged)
