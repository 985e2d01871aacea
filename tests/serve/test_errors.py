"""Errors are answers: each bad request gets its status code, and the next valid one succeeds."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from serve.client import Client
from serve.errors import (
    InvalidInput,
    ModelNotFound,
    ResourceExhausted,
    ServeError,
    ServerUnavailable,
    VersionNotFound,
)
from serve.grpc import clf_pb2 as pb
from serve.grpc import clf_pb2_grpc
from tests.images import encode, gray_pixels
from tests.serve.conftest import (
    BrokenClassifier,
    ServerThread,
    check_expired_request_never_reaches_model,
)

RNG = np.random.default_rng(11)
PNG = encode(gray_pixels("light", RNG))
BIG_PNG = encode(np.zeros((200, 200), np.uint8))  # 40,000 pixels > the limit of 10,000
BOMB = encode(np.zeros((6000, 6000), np.uint8))  # 36 Mpx that compresses to a few KiB
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def request(*inputs: pb.Input, model: str = "gray", **spec: object) -> pb.ClassifyRequest:
    message = pb.ClassifyRequest(inputs=list(inputs))
    message.model_spec.name = model
    for key, value in spec.items():
        setattr(message.model_spec, key, value)
    return message


def tensor(array: np.ndarray, dtype: int = pb.DATA_TYPE_FLOAT32) -> pb.Tensor:
    return pb.Tensor(shape=list(array.shape), dtype=dtype, data=array.tobytes())


def image(data: bytes) -> pb.Input:
    return pb.Input(image=data)


GOOD_INPUT = np.full((28, 28, 1), 0.5, np.float32)
NAN_INPUT = GOOD_INPUT.copy()
NAN_INPUT[3, 4, 0] = np.nan
INF_PIXELS = np.full((28, 28), 100.0, np.float32)
INF_PIXELS[0, 0] = np.inf

# (case id, request, expected code, text the message must contain)
BAD_REQUESTS = [
    ("unknown model", request(image(PNG), model="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    ("empty model name", request(image(PNG), model=""), grpc.StatusCode.NOT_FOUND, "not found"),
    ("unknown version", request(image(PNG), version=9), grpc.StatusCode.NOT_FOUND, "9"),
    ("negative version", request(image(PNG), version=-1), grpc.StatusCode.NOT_FOUND, "-1"),
    ("unknown label", request(image(PNG), version_label="beta"), grpc.StatusCode.NOT_FOUND, "beta"),
    ("no inputs", request(), INVALID, "no inputs"),
    ("input without kind", request(image(PNG), pb.Input()), INVALID, "input 1"),
    ("undecodable image", request(image(PNG), image(b"GIF89a garbage")), INVALID, "input 1"),
    ("empty image", request(image(b"")), INVALID, "input 0"),
    ("truncated png", request(image(PNG[: len(PNG) // 2])), INVALID, "input 0"),
    ("over pixel limit", request(image(BIG_PNG)), INVALID, "over the limit"),
    ("decompression bomb", request(image(PNG), image(BOMB)), INVALID, "input 1"),
    (
        "wrong tensor shape",
        request(pb.Input(model_input=tensor(np.zeros((28, 27, 1), np.float32)))),
        INVALID,
        "does not match",
    ),
    (
        "wrong tensor dtype",
        request(pb.Input(model_input=tensor(GOOD_INPUT, pb.DATA_TYPE_UNSPECIFIED))),
        INVALID,
        "dtype",
    ),
    (
        "tensor bytes do not fit the shape",
        request(pb.Input(pixels=pb.Tensor(shape=[28, 28], dtype=pb.DATA_TYPE_UINT8, data=b"x"))),
        INVALID,
        "bytes",
    ),
    (
        "bad raw pixel shape",
        request(pb.Input(pixels=tensor(np.zeros((4, 4, 2), np.uint8), pb.DATA_TYPE_UINT8))),
        INVALID,
        "raw pixels",
    ),
    ("NaN in model input", request(pb.Input(model_input=tensor(NAN_INPUT))), INVALID, "NaN"),
    ("Inf in raw pixels", request(pb.Input(pixels=tensor(INF_PIXELS))), INVALID, "NaN or Inf"),
    ("too many images", request(*[image(PNG)] * 9), INVALID, "over the limit of 8"),
    (
        "oversize message",
        request(image(b"\0" * 700_000)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "",
    ),
]


@pytest.fixture(scope="module")
def strict_server(model_repository: Path):
    server = ServerThread(
        _settings(model_repository, max_images=8, max_pixels=10_000, max_message_mb=0.5)
    ).start()
    with Client(server.target) as client:
        client.wait_ready(60)
    yield server
    server.stop()


def _settings(repository: Path, **overrides: object):
    from tests.serve.conftest import make_settings

    return make_settings(repository, **overrides)


@pytest.mark.parametrize(
    ("message", "code", "text"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_its_status_then_server_answers(
    strict_server: ServerThread, message: pb.ClassifyRequest, code: grpc.StatusCode, text: str
) -> None:
    with grpc.insecure_channel(strict_server.target) as channel:
        stub = clf_pb2_grpc.ClassificationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Classify(message, timeout=30)
        assert caught.value.code() == code, caught.value.details()
        assert text in (caught.value.details() or "")
        assert "Traceback" not in (caught.value.details() or "")
        answer = stub.Classify(request(image(PNG)), timeout=30)
    assert answer.model_spec.version == 1 and len(answer.results) == 1


def test_client_raises_domain_errors(strict_server: ServerThread) -> None:
    with Client(strict_server.target) as client:
        with pytest.raises(ModelNotFound):
            client.classify("nope", [PNG])
        with pytest.raises(VersionNotFound):
            client.classify("gray", [PNG], version=5)
        with pytest.raises(InvalidInput) as caught:
            client.classify("gray", [PNG, PNG, b"junk"])
        assert caught.value.index == 2
        with pytest.raises(ModelNotFound):
            client.get_model("nope")
        with pytest.raises(ResourceExhausted, match="larger than max"):
            client.classify("gray", [b"\0" * 700_000])  # over the server's 0.5 MiB
        assert client.classify("gray", [PNG]).version == 1


def test_internal_error_is_internal_without_details_and_logged(
    model_repository: Path,
    start_server: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start_server(model_repository, loader=BrokenClassifier)
    public = "internal error (RuntimeError); see the server log"
    with Client(server.target) as client:
        client.wait_ready(60)
        with caplog.at_level(logging.ERROR, logger="serve.grpc.status"):
            with grpc.insecure_channel(server.target) as channel:
                stub = clf_pb2_grpc.ClassificationServiceStub(channel)
                with pytest.raises(grpc.RpcError) as caught:
                    stub.Classify(request(image(PNG)), timeout=30)
            with pytest.raises(ServeError) as raised:
                client.classify("gray", [PNG])
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == public
    assert type(raised.value) is ServeError and str(raised.value) == public
    logged = [r for r in caplog.records if r.name == "serve.grpc.status"]
    assert [r.getMessage() for r in logged] == ["internal error"] * 2
    assert all(r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in logged)


def _classify(channel: grpc.Channel, png: bytes, timeout: float) -> object:
    return clf_pb2_grpc.ClassificationServiceStub(channel).Classify(
        request(image(png)), timeout=timeout
    )


def test_expired_request_never_reaches_the_model(
    model_repository: Path, start_server: Callable[..., ServerThread]
) -> None:
    check_expired_request_never_reaches_model(start_server, model_repository, _classify)


def test_unreachable_server_is_server_unavailable() -> None:
    # A port we hold bound but never listen on: connections are refused, and no other process
    # can take it while the test runs.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{held.getsockname()[1]}"
        with Client(target, timeout=2) as client:
            with pytest.raises(ServerUnavailable):
                client.classify("gray", [PNG])
            with pytest.raises(ServerUnavailable):
                client.wait_ready(0.3)


class _Context:
    """The one thing `plane_timeout` reads of a gRPC servicer context."""

    def __init__(self, left: float | None) -> None:
        self.left = left

    def time_remaining(self) -> float | None:
        return self.left


@pytest.mark.parametrize(("left", "timeout"), [(None, None), (5.0, None), (0.0, 0.0), (-1, 0.0)])
def test_grpc_calls_leave_the_deadline_to_grpc_unless_it_has_passed(
    left: float | None, timeout: float | None
) -> None:
    """gRPC cancels a call at its deadline itself (the expired-request tests above show the
    model never sees it), so the data plane gets no timer; a deadline already passed when the
    call is read becomes timeout 0, which the plane answers DEADLINE_EXCEEDED at once."""
    from serve.grpc.status import plane_timeout

    assert plane_timeout(_Context(left)) == timeout  # type: ignore[arg-type]
