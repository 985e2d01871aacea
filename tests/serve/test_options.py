"""Each clfserve option changes what a real server does (docs/options.md maps option -> test)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from watchdog.observers.api import BaseObserver

from serve.client import Client, build_request
from serve.errors import InvalidInput, VersionNotFound
from serve.grpc import clf_pb2_grpc
from tests.conftest import REPO_ROOT
from tests.images import encode
from tests.serve.conftest import (
    Recording,
    ServerThread,
    flat_png,
    metric,
    wait_for,
)
from tests.serve.test_tfserving import local_probabilities

Start = Callable[..., ServerThread]


def _classify_future(channel: grpc.Channel, pngs: list[bytes], timeout: float = 60):
    stub = clf_pb2_grpc.ClassificationServiceStub(channel)
    return stub.Classify.future(build_request("gray", pngs), timeout=timeout)


def _code(future: grpc.Future) -> str:
    try:
        future.result()
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


def _flat_values(recording: Recording) -> list[list[int]]:
    """Each model call as the flat pixel values of its rows."""
    return [[round(float(row.mean()) * 255) for row in batch] for batch in recording.seen("gray")]


def _arriving(server: ServerThread, name: str) -> int:
    """Requests the newest version of `name` is still decoding (read on the server's loop)."""
    assert server.app is not None and server.loop is not None
    registry = server.app.dataplane.registry

    async def read() -> int:
        with registry.acquire(name) as handle:
            return handle.batcher.arriving_count

    return asyncio.run_coroutine_threadsafe(read(), server.loop).result(10)


VALUES = (20, 30, 40, 50, 60, 70)


def test_queue_bound_and_max_batch_size(model_repository: Path, start_server: Start) -> None:
    recording = Recording(gate_open=False)
    server = start_server(
        model_repository, loader=recording.load, metrics_port=0, queue_bound=3,
        max_batch_size=4, batch_timeout_ms=0,
    )  # fmt: skip
    with Client(server.target) as client, grpc.insecure_channel(server.target) as channel:
        client.wait_ready(60)
        try:
            held = _classify_future(channel, [flat_png(10)])
            assert recording.calling.wait(60)
            # Six two-image requests while the model is busy: three fit the queue, three don't.
            waiting = [_classify_future(channel, [flat_png(v)] * 2) for v in VALUES]
            refused = {"model": "gray", "version": "1", "code": "RESOURCE_EXHAUSTED"}
            wait_for(lambda: metric(server, "clfserve_requests_total", **refused) == 3)
        finally:
            recording.gate.set()
        codes = [_code(future) for future in [held, *waiting]]
    assert codes.count("RESOURCE_EXHAUSTED") == 3 and codes.count("OK") == 4, codes
    accepted = [v for v, code in zip(VALUES, codes[1:], strict=True) if code == "OK"]
    batches = _flat_values(recording)
    # max_batch_size 4: the three queued requests of two images go as 4 + 2, never split.
    assert [len(batch) for batch in batches] == [1, 4, 2]
    assert sorted(v for batch in batches[1:] for v in batch[::2]) == sorted(accepted)


@pytest.mark.parametrize(("timeout_ms", "calls"), [(0, [1, 1]), (60_000, [2])])
def test_batch_timeout_ms_waits_for_requests_still_decoding(
    model_repository: Path, start_server: Start, timeout_ms: float, calls: list[int]
) -> None:
    """A small image queued while a huge one is still being decoded: with a timeout the model
    call waits for the huge one (one call of 2); with 0 it goes at once (two calls of 1)."""
    recording = Recording()
    server = start_server(
        model_repository, loader=recording.load, batch_timeout_ms=timeout_ms, decode_threads=2
    )
    huge = encode(np.full((5000, 5000), 200, np.uint8))  # 25 Mpx: slow to decode and resize
    with Client(server.target) as client, grpc.insecure_channel(server.target) as channel:
        client.wait_ready(60)
        slow = _classify_future(channel, [huge])
        # The server must be decoding the huge image before the small one comes in.
        wait_for(lambda: _arriving(server, "gray") > 0, what="the huge image to be decoding")
        quick = _classify_future(channel, [flat_png(30)])
        assert [_code(quick), _code(slow)] == ["OK", "OK"]
    assert [len(batch) for batch in _flat_values(recording)] == calls


def test_decode_threads(model_repository: Path, start_server: Start) -> None:
    before = {t.name for t in threading.enumerate()}
    server = start_server(model_repository, decode_threads=3)
    with Client(server.target) as client:
        client.wait_ready(60)
        assert client.classify("gray", [flat_png(5)]).version == 1
    started = {t.name for t in threading.enumerate()} - before
    assert sorted(name for name in started if name.startswith("decode")) == [
        "decode-0", "decode-1", "decode-2",
    ]  # fmt: skip


def test_specific_version_policy_serves_only_those_versions(
    two_versions: Path, start_server: Start
) -> None:
    server = start_server(two_versions, version_policy="specific:1")
    png = flat_png(90)
    with Client(server.target) as client:
        client.wait_ready(60)
        answer = client.classify("gray", [png])
        assert answer.version == 1
        np.testing.assert_allclose(
            answer.predictions[0].probabilities,
            local_probabilities(two_versions, "gray", 1, [png])[0],
            atol=1e-5,
        )
        with pytest.raises(VersionNotFound):
            client.classify("gray", [png], version=2)
        assert client.get_model("gray").default_version == 1


def test_no_watch_reloads_by_polling(
    repository_copy: Path, two_versions: Path, start_server: Start
) -> None:
    server = start_server(repository_copy, watch=False, poll_interval=0.2)
    with Client(server.target) as client:
        client.wait_ready(60)
        assert not [t for t in threading.enumerate() if isinstance(t, BaseObserver)]
        staging = repository_copy / "gray" / ".incoming"
        shutil.copytree(two_versions / "gray" / "2", staging)
        staging.rename(repository_copy / "gray" / "2")
        wait_for(lambda: client.get_model("gray").default_version == 2, what="the rescan")
        assert client.classify("gray", [flat_png(1)]).version == 2


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_shutdown_lets_in_flight_requests_finish_within_grace(
    model_repository: Path, start_server: Start
) -> None:
    recording = Recording(gate_open=False)
    server = start_server(model_repository, loader=recording.load, grace=120)
    with Client(server.target) as client, grpc.insecure_channel(server.target) as channel:
        client.wait_ready(60)
        try:
            held = _classify_future(channel, [flat_png(10)])
            assert recording.calling.wait(60)
            server.request_stop()
            wait_for(lambda: not _serving(server.target), what="shutdown to begin")
            assert not held.done()
        finally:
            recording.gate.set()
        assert _code(held) == "OK"
    assert server.join(60), "the server did not stop after its last request"


def test_grace_running_out_cuts_in_flight_requests(
    model_repository: Path, start_server: Start
) -> None:
    recording = Recording(gate_open=False)
    server = start_server(model_repository, loader=recording.load, grace=0.5)
    with Client(server.target) as client, grpc.insecure_channel(server.target) as channel:
        client.wait_ready(60)
        try:
            held = _classify_future(channel, [flat_png(10)], timeout=120)
            assert recording.calling.wait(60)
            server.request_stop()
            # The model is still held: only the grace period running out can end the call.
            assert _code(held) in ("CANCELLED", "UNAVAILABLE")
            assert recording.returned == 0
        finally:
            recording.gate.set()
    assert server.join(60)


TEXT_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def _json_lines(text: str) -> list[dict[str, object]]:
    """Python's log lines as JSON objects (TensorFlow's C++ runtime writes its own lines)."""
    assert not [line for line in text.splitlines() if TEXT_LOG_LINE.match(line)], text
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_environment_configures_the_real_entry_point(
    model_repository: Path, tmp_path: Path
) -> None:
    """`python -m serve` configured by CLFSERVE_* variables alone; a flag beats its variable;
    JSON log lines; SIGTERM exits 0."""
    port_file = tmp_path / "port"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "CLFSERVE_REPOSITORY": str(model_repository),
        "CLFSERVE_HOST": "127.0.0.1",
        "CLFSERVE_PORT": "0",
        "CLFSERVE_PORT_FILE": str(port_file),
        "CLFSERVE_METRICS_PORT": "0",
        "CLFSERVE_MAX_IMAGES": "2",
        "CLFSERVE_LOG_FORMAT": "json",
        "CLFSERVE_LOG_LEVEL": "ERROR",  # overridden by the flag below
        "CLFSERVE_MAX_BATCH_SIZE": "0",  # invalid: the flag below must win
    }
    command = [sys.executable, "-m", "serve", "--log-level", "INFO", "--max-batch-size", "4"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip() != "", 90)
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        with Client(target) as client:
            client.wait_ready(90)
            assert client.classify("gray", [flat_png(3)] * 2).version == 1
            with pytest.raises(InvalidInput, match="over the limit of 2"):
                client.classify("gray", [flat_png(3)] * 3)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    lines = _json_lines(stderr)
    messages = [str(line["message"]) for line in lines]
    assert f"listening on 127.0.0.1:{port_file.read_text().strip()}" in messages
    assert "stopped" in messages
    assert all({"level", "message"} <= set(line) for line in lines)
    assert "INFO" in {str(line["level"]).upper() for line in lines}  # --log-level beat the env


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["--port", "70000"],
        ["--version-policy", "newest"],
    ],
)
def test_a_bad_command_line_exits_2_with_a_message_not_a_traceback(
    argv: list[str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serve", *argv], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("clfserve: error:")
