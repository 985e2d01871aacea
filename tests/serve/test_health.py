"""Standard services: health (overall and per model) and reflection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from serve.client import Client
from serve.errors import ModelNotReady
from serve.loader import load
from serve.repository import ModelVersion
from tests.images import encode
from tests.serve.conftest import ServerThread, wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def status(stub: health_pb2_grpc.HealthStub, service: str) -> int | None:
    try:
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return None


def test_health_goes_not_serving_to_serving(
    model_repository: Path, start_server: Callable[..., ServerThread]
) -> None:
    gate = threading.Event()

    def gated_load(version: ModelVersion):
        gate.wait(60)  # hold the first load so the loading state can be observed
        return load(version)

    server = start_server(model_repository, loader=gated_load)
    try:
        with grpc.insecure_channel(server.target) as channel, Client(server.target) as client:
            health = health_pb2_grpc.HealthStub(channel)
            assert status(health, "") == NOT_SERVING
            wait_for(lambda: status(health, "gray") == NOT_SERVING)
            with pytest.raises(ModelNotReady):
                client.classify("gray", [encode(np.zeros((28, 28), np.uint8))])
            gate.set()
            wait_for(lambda: status(health, "") == SERVING)
            assert status(health, "gray") == SERVING and status(health, "rgb") == SERVING
            assert status(health, "no-such-model") is None
            client.wait_ready(1)
    finally:
        gate.set()


def test_reflection_lists_the_services(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "clf.v1.ClassificationService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


# Graceful shutdown: tests/serve/test_options.py (in-flight requests finish within `grace`, are
# cut when it runs out; SIGTERM to `python -m serve` exits 0).
