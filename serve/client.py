"""A blocking Python client for clfserve's clf.v1 API.

    with Client("localhost:8500") as client:
        client.wait_ready()
        result = client.classify("mnist", [Path("digit.png"), png_bytes, pixels], top_k=3)
        result.predictions[0].label, result.version
        vectors = client.embed("mnist", [Path("digit.png")]).vectors   # float32 [1, d]

Paths and bytes are sent as encoded images (the server preprocesses them as the model's manifest
says); arrays as tensors, raw pixels or, with `preprocessed=True`, the model input itself.
`Client("host1:8500,host2:8500")` or `Client("dns:///clfserve:8500")` balances over replicas
(round_robin, health-checked, idempotent calls retried on UNAVAILABLE: `serve.replicas`).
Failures come back as `serve.errors` exceptions: ModelNotFound / VersionNotFound, InvalidInput
(with the input index), ResourceExhausted, ModelNotReady, and ServerUnavailable for an unreachable
or too slow server.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serve.dataplane import ONLY_EMBEDDING, ClassifyRequest, ImageInput, Input, TensorInput
from serve.errors import ServerUnavailable
from serve.grpc import clf_pb2 as pb
from serve.grpc import clf_pb2_grpc, convert
from serve.grpc.status import error_from_rpc
from serve.replicas import channel_options, channel_target
from serve.versions import ModelInfo, VersionInfo, VersionState

__all__ = [
    "Classification",
    "Client",
    "Embeddings",
    "ModelInfo",
    "Prediction",
    "VersionInfo",
    "VersionState",
    "to_input",
]
ClientInput = str | Path | bytes | np.ndarray
_MESSAGE_LIMIT = 64 * 1024 * 1024
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True)
class Prediction:
    """One input's answer."""

    label: str
    score: float
    probabilities: np.ndarray  # float32, manifest class order
    top_k: list[tuple[str, float]]


@dataclass(frozen=True)
class Classification:
    model: str
    version: int  # the version that actually answered
    labels: tuple[str, ...]
    predictions: list[Prediction]


@dataclass(frozen=True)
class Embeddings:
    model: str
    version: int  # the version that actually answered
    vectors: np.ndarray  # float32 [inputs, dimension], in input order
    layer: str  # the Keras layer whose output they are


def to_input(item: ClientInput, preprocessed: bool = False) -> Input:
    """A path, encoded bytes or an array -> the request input it is sent as."""
    if isinstance(item, np.ndarray):
        return TensorInput(item, preprocessed=preprocessed)
    if isinstance(item, bytes | bytearray | memoryview):
        return ImageInput(bytes(item))
    if isinstance(item, str | Path):
        return ImageInput(Path(item).read_bytes())
    raise TypeError(f"cannot send {type(item).__name__}: give a path, bytes or an ndarray")


def build_request(
    model: str,
    inputs: Sequence[ClientInput],
    *,
    version: int | None = None,
    label: str | None = None,
    top_k: int = 1,
    preprocessed: bool = False,
    request_id: str = "",
) -> pb.ClassifyRequest:
    """The clf.v1 request message for these arguments (also used by the async benchmark)."""
    request = ClassifyRequest(
        model, [to_input(i, preprocessed) for i in inputs], version, label, top_k
    )
    return convert.classify_request_to_proto(request, request_id)


def result_from_response(message: pb.ClassifyResponse) -> Classification:
    result = convert.classify_result_from_proto(message)
    predictions = [
        Prediction(best[0][0], best[0][1], row, best)
        for row, best in zip(result.probabilities, result.top_k, strict=True)
    ]
    return Classification(result.model, result.version, result.labels, predictions)


class Client:
    """A channel to one clfserve, or to several replicas; thread-safe; a context manager."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        token: str | None = None,
    ) -> None:
        """TLS when any `tls_*` is given (no `tls_ca`: the system's roots), mutual TLS with
        `tls_cert` and `tls_key`; `token` is sent as `authorization: Bearer <token>`.
        `target` is HOST:PORT, replicas as HOST:PORT,HOST:PORT,... or a `dns:///` name.
        Raises ValueError for half a key pair or a bad replica list, OSError for an unreadable
        file."""
        self.target = target
        self.timeout = timeout
        channel_address, balanced = channel_target(target)
        options = [
            ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
            ("grpc.max_send_message_length", _MESSAGE_LIMIT),
            *channel_options(target, balanced, _MESSAGE_LIMIT),
        ]
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("a client certificate needs its key: give tls_cert and tls_key")
        if tls_ca is None and tls_cert is None:
            self._channel = grpc.insecure_channel(channel_address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(tls_ca).read_bytes() if tls_ca else None,
                private_key=Path(tls_key).read_bytes() if tls_key else None,
                certificate_chain=Path(tls_cert).read_bytes() if tls_cert else None,
            )
            self._channel = grpc.secure_channel(channel_address, credentials, options=options)
        # Metadata, not call credentials: those refuse plaintext (a server behind a TLS proxy).
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._stub = clf_pb2_grpc.ClassificationServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the server reports SERVING; raises ServerUnavailable after `timeout` s."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerUnavailable(f"{self.target} not ready after {timeout:.1f} s ({last})")
            try:
                reply = self._health.Check(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=min(remaining, 1.0),
                    metadata=self._metadata,
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                if hasattr(exc, "code") and exc.code() in _REFUSED:  # waiting will not help
                    raise error_from_rpc(exc) from None
                last = f"{exc.code().name}: {exc.details()}" if hasattr(exc, "code") else str(exc)
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def classify(
        self,
        model: str,
        inputs: Sequence[ClientInput],
        *,
        version: int | None = None,
        label: str | None = None,
        top_k: int = 1,
        preprocessed: bool = False,
    ) -> Classification:
        """Classify `inputs` with one version of `model` (the newest available by default)."""
        request = build_request(
            model, inputs, version=version, label=label, top_k=top_k, preprocessed=preprocessed
        )
        try:
            response = self._stub.Classify(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, model, version if version is not None else label) from None
        return result_from_response(response)

    def embed(
        self,
        model: str,
        inputs: Sequence[ClientInput],
        *,
        version: int | None = None,
        label: str | None = None,
        preprocessed: bool = False,
    ) -> Embeddings:
        """The penultimate layer's vector of each input (the Embed RPC). A version without the
        `embedding` signature raises ModelNotFound naming the command that adds it."""
        request = ClassifyRequest(
            model, [to_input(i, preprocessed) for i in inputs], version, label, top_k=0,
            outputs=ONLY_EMBEDDING,
        )  # fmt: skip
        try:
            response = self._stub.Embed(
                convert.embed_request_to_proto(request), timeout=self.timeout,
                metadata=self._metadata,
            )  # fmt: skip
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, model, version if version is not None else label) from None
        name, number, vectors = convert.embed_result_from_proto(response)
        return Embeddings(name, number, vectors, response.layer)

    def list_models(self) -> list[ModelInfo]:
        try:
            response = self._stub.ListModels(
                pb.ListModelsRequest(), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return [convert.model_info_from_proto(m) for m in response.models]

    def get_model(self, name: str) -> ModelInfo:
        """The model's versions (state, failure reason, labels), classes, input spec, accuracy."""
        try:
            response = self._stub.GetModel(
                pb.GetModelRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, name) from None
        return convert.model_info_from_proto(response)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
