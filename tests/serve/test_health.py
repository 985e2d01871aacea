"""Standard services: health (overall and per model), reflection, graceful shutdown on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from serve.client import Client, build_request
from serve.errors import ModelNotReady
from serve.grpc import clf_pb2_grpc
from serve.loader import load
from serve.repository import ModelVersion
from tests.conftest import REPO_ROOT
from tests.images import encode
from tests.serve.conftest import ServerThread

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def status(stub: health_pb2_grpc.HealthStub, service: str) -> int | None:
    try:
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return None


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


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


def outcome(future: grpc.Future) -> str:
    try:
        answer = future.result()
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "OK" if len(answer.results) == 32 and answer.results[0].top_k else "incomplete"


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_and_exits_0(
    model_repository: Path, tmp_path: Path
) -> None:
    port_file = tmp_path / "port"
    command = [
        sys.executable, "-m", "serve", "--repository", str(model_repository),
        "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
        "--metrics-port", "off", "--max-batch-size", "8", "--grace", "30",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip() != "", 60)
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        with Client(target) as client:
            client.wait_ready(90)
        # Small to send, slow to decode and resize: every request is received well before
        # SIGTERM and still being worked on when it arrives.
        ramp = np.linspace(0, 255, 512, dtype=np.float32)
        pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (512, 1)),
                           np.full((512, 512), 200.0)], axis=-1).astype(np.uint8)  # fmt: skip
        images = [encode(pixels)] * 32
        request = build_request("rgb", images)
        finished: list[float] = []
        with grpc.insecure_channel(target) as channel:
            stub = clf_pb2_grpc.ClassificationServiceStub(channel)
            futures = [stub.Classify.future(request, timeout=60) for _ in range(16)]
            for future in futures:
                future.add_done_callback(lambda _: finished.append(time.monotonic()))
            time.sleep(0.5)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            outcomes = [outcome(future) for future in futures]
        output, _ = process.communicate(timeout=60)
        assert outcomes == ["OK"] * len(futures), output
        assert max(finished) > signalled, "nothing was in flight at SIGTERM"
        assert process.returncode == 0, output
        assert "listening on 127.0.0.1:" in output and "stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
