"""clf.v1 ClassifyStream on a real server: a stream the client cancels takes its queued
requests with it, so the model never works for a caller that has gone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from serve.client import Client, build_request
from serve.grpc import clf_pb2_grpc
from tests.serve.conftest import Recording, ServerThread, flat_png, metric, wait_for


def _queued(app: Any) -> int:
    with app.dataplane.registry.acquire("gray", None, None) as handle:
        return int(handle.batcher.queue_depth)


def test_cancelled_stream_cancels_its_queued_requests(
    model_repository: Path, start_server: Callable[..., ServerThread]
) -> None:
    recording = Recording(gate_open=False)
    server = start_server(
        model_repository, loader=recording.load, metrics_port=0, max_batch_size=1,
        batch_timeout_ms=0,
    )  # fmt: skip

    def cancelled() -> float:
        labels = {"model": "gray", "version": "1", "code": "CANCELLED"}
        return metric(server, "clfserve_requests_total", **labels)

    streamed, later = [10, 20, 30], 250
    with Client(server.target, timeout=60) as client, grpc.insecure_channel(server.target) as ch:
        client.wait_ready(60)
        stub = clf_pb2_grpc.ClassificationServiceStub(ch)
        messages = [build_request("gray", [flat_png(value)]) for value in streamed]
        stream = stub.ClassifyStream(iter(messages), timeout=60)
        try:
            assert recording.calling.wait(60), "no stream request reached the model"
            wait_for(lambda: server.call(_queued) == 2, what="two requests queued behind it")
            stream.cancel()
            # The one awaited for the next answer and the two still in the stream's window.
            wait_for(lambda: cancelled() == 3, what="the server to cancel all three requests")
        finally:
            recording.gate.set()
        client.classify("gray", [flat_png(later)])
    seen = [round(float(row.mean()) * 255) for row in recording.rows("gray")]
    assert len(seen) == 2 and seen[0] in streamed and seen[1] == later, seen
