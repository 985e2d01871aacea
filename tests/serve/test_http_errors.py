"""Every error status of the REST port, each answered {"error": "..."} and never a traceback:
404, 405, 400 (naming the input index), 413, 415, 429 (queue full), 503 (loading), 500."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serve.client import Client
from tests.images import encode, gray_pixels
from tests.serve.conftest import (
    BrokenClassifier,
    Recording,
    ServerThread,
    flat_png,
    make_settings,
    metric,
    wait_for,
)
from tests.serve.test_tfserving import gated_loader

PNG = encode(gray_pixels("dark", np.random.default_rng(3)))
B64 = base64.b64encode(PNG).decode()
Start = Callable[..., ServerThread]


def rest_url(server: ServerThread) -> str:
    assert server.app is not None and server.app.rest_port
    return f"http://127.0.0.1:{server.app.rest_port}"


@pytest.fixture(scope="module")
def http(model_repository: Path) -> Iterator[httpx.Client]:
    settings = make_settings(model_repository, rest_port=0, max_images=4, max_message_mb=0.25)
    server = ServerThread(settings).start()
    with Client(server.target) as client:
        client.wait_ready(60)
    with httpx.Client(base_url=rest_url(server), timeout=60) as client:
        yield client
    server.stop()


def v2(data: Any, datatype: str = "BYTES", shape: list[int] | None = None, **extra: Any) -> dict:
    tensor = {"name": "images", "datatype": datatype, "shape": shape or [1], "data": data}
    if "parameters" in extra:  # the input's (binary data), not the request's
        tensor = {**tensor, "parameters": extra.pop("parameters")}
    return {"inputs": [tensor], **extra}


def _raw(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": "image/png"}}


def _binary(data: bytes, size: int) -> dict[str, Any]:
    """A binary-extension body whose input claims `size` bytes of `data`."""
    parameters = {"binary_data_size": size}
    header = json.dumps(v2(None, parameters=parameters)["inputs"][0]).encode()
    header = b'{"inputs": [' + header + b"]}"
    length = str(len(header))
    return {"content": header + data, "headers": {"Inference-Header-Content-Length": length}}


def _stray(extra: bytes) -> dict[str, Any]:
    """A binary-extension body whose input carries JSON data, followed by `extra` bytes."""
    header = json.dumps(v2([B64])).encode()
    length = str(len(header))
    return {"content": header + extra, "headers": {"Inference-Header-Content-Length": length}}


GARBAGE = b"not an image"
CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # (case, method, path, httpx arguments, status, words in the error)
    ("no route", "GET", "/v3/nothing", {}, 404, "Not Found"),
    ("wrong method", "GET", "/v2/models/gray/infer", {}, 405, "Method Not Allowed"),
    ("v2 unknown model", "GET", "/v2/models/nope", {}, 404, "model 'nope' not found"),
    ("v2 unknown version", "POST", "/v2/models/gray/versions/9/infer", {"json": v2([B64])},
     404, "no version 9"),
    ("tf unknown model", "GET", "/v1/models/nope", {}, 404, "model 'nope' not found"),
    ("tf unknown version", "GET", "/v1/models/gray/versions/9", {}, 404, "no version '9'"),
    ("tf version not ASCII digits", "GET", "/v1/models/gray/versions/%C2%B2", {}, 400,
     "version must be a non-negative integer, not '²'"),
    ("tf unknown label", "GET", "/v1/models/gray/labels/gold/metadata", {}, 400,
     "Unrecognized servable version label: gold"),
    ("upload unknown model", "POST", "/v1/models/nope/classify", _raw(PNG), 404, "'nope'"),
    ("upload unknown version", "POST", "/v1/models/gray/versions/4/classify", _raw(PNG), 404,
     "no version 4"),
    ("v2 not JSON", "POST", "/v2/models/gray/infer", {"content": b"{"}, 400, "not valid JSON"),
    ("v2 no inputs", "POST", "/v2/models/gray/infer", {"json": {}}, 400, "'inputs' list"),
    ("v2 bad base64", "POST", "/v2/models/gray/infer", {"json": v2(["%%%"])}, 400, "base64"),
    ("v2 bytes not a string", "POST", "/v2/models/gray/infer", {"json": v2([5])}, 400,
     'expected a base64 string or {"b64": ...}, not 5'),
    ("v2 no data", "POST", "/v2/models/gray/infer", {"json": v2(None)}, 400,
     "input 'images' has neither data nor binary_data_size"),
    ("v2 fp32 not numbers", "POST", "/v2/models/gray/infer",
     {"json": v2(["x"], "FP32", [1, 1, 1, 1])}, 400, "input 'images': data is not a FP32 array"),
    ("v2 input without shape", "POST", "/v2/models/gray/infer",
     {"json": {"inputs": [{"name": "images", "datatype": "BYTES", "data": [B64]}]}}, 400,
     "malformed inference request: KeyError 'shape'"),
    ("v2 stray binary data", "POST", "/v2/models/gray/infer", _stray(b"xyz"), 400,
     "3 bytes of binary data belong to no input"),
    ("v2 bad image", "POST", "/v2/models/gray/infer",
     {"json": v2([B64, base64.b64encode(GARBAGE).decode()], shape=[2])}, 400, "input 1:"),
    ("v2 datatype", "POST", "/v2/models/gray/infer", {"json": v2([1], "INT64")}, 400, "INT64"),
    ("v2 uint8 range", "POST", "/v2/models/gray/infer",
     {"json": v2([[[300]]], "UINT8", [1, 1, 1])}, 400, "0..255"),
    ("v2 fp32 shape", "POST", "/v2/models/gray/infer",
     {"json": v2([0.5] * 4, "FP32", [1, 2, 2, 1])}, 400, "[-1, 28, 28, 1]"),
    ("v2 binary size", "POST", "/v2/models/gray/infer", _binary(b"1234", 99), 400,
     "binary_data_size 99"),
    ("v2 header length", "POST", "/v2/models/gray/infer",
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": "9"}}, 400,
     "Inference-Header-Content-Length"),
    ("v2 classification 0", "POST", "/v2/models/gray/infer",
     {"json": v2([B64], outputs=[{"name": "probabilities", "parameters": {"classification": 0}}])},
     400, "classification count"),
    ("too many images", "POST", "/v2/models/gray/infer", {"json": v2([B64] * 5, shape=[5])},
     400, "over the limit of 4"),
    ("tf both formats", "POST", "/v1/models/gray:predict",
     {"json": {"instances": [], "inputs": []}}, 400, "either 'instances' or 'inputs'"),
    ("tf wrong input", "POST", "/v1/models/gray:predict",
     {"json": {"instances": [{"pixels": {"b64": B64}}]}}, 400, "input names do not match"),
    ("tf bad image", "POST", "/v1/models/gray:predict",
     {"json": {"instances": [{"b64": B64}, {"b64": base64.b64encode(GARBAGE).decode()}]}},
     400, "input 1:"),
    ("tf signature", "POST", "/v1/models/gray:predict",
     {"json": {"signature_name": "other", "instances": [{"b64": B64}]}}, 400, '"other"'),
    ("tf version text", "GET", "/v1/models/gray/versions/x", {}, 400, "non-negative integer"),
    ("tf not numeric", "POST", "/v1/models/gray:predict", {"json": {"inputs": [[0.5, "x"]]}},
     400, "input 'images': not a numeric tensor nor b64 images"),
    ("tf instances not a list", "POST", "/v1/models/gray:predict",
     {"json": {"instances": {"b64": B64}}}, 400, "'instances' must be a list"),
    ("tf instances differ", "POST", "/v1/models/gray:predict",
     {"json": {"instances": [{"images": {"b64": B64}}, {"pixels": {"b64": B64}}]}}, 400,
     "instance 1 has inputs ['pixels'], not ['images']"),
    ("upload version text", "POST", "/v1/models/gray/versions/x/classify", _raw(PNG), 400,
     "version must be a non-negative integer, not 'x'"),
    ("upload version not ASCII digits", "POST", "/v1/models/gray/versions/%D9%A3/classify",
     _raw(PNG), 400, "version must be a non-negative integer, not '٣'"),
    ("upload top_k not ASCII digits", "POST", "/v1/models/gray/classify?top_k=%C2%B2", _raw(PNG),
     400, "top_k must be a positive integer, not '²'"),
    ("upload bad image", "POST", "/v1/models/gray/classify",
     {"files": [("a", ("a.png", PNG)), ("b", ("b.png", GARBAGE))]}, 400, "input 1:"),
    ("upload no files", "POST", "/v1/models/gray/classify",
     {"files": [("note", (None, "text"))]}, 400, "no file fields"),
    ("upload top_k", "POST", "/v1/models/gray/classify?top_k=0", _raw(PNG), 400, "top_k"),
    ("upload media type", "POST", "/v1/models/gray/classify",
     {"content": PNG, "headers": {"Content-Type": "text/plain"}}, 415, "Content-Type image/*"),
    ("upload too large", "POST", "/v1/models/gray/classify", _raw(b"\0" * 300_000), 413,
     "limit of 0.25 MiB"),
    ("multipart too large", "POST", "/v1/models/gray/classify",
     {"files": [("a", ("a.png", b"\0" * 300_000))]}, 413, "limit of 0.25 MiB"),
    ("v2 too large", "POST", "/v2/models/gray/infer", {"json": v2(["A" * 300_000])}, 413,
     "limit of 0.25 MiB"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "arguments", "status", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_error_status_and_body(
    http: httpx.Client, method: str, path: str, arguments: dict, status: int, words: str
) -> None:
    answer = http.request(method, path, **arguments)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert words in error and "Traceback" not in error


def test_queue_full_is_429(model_repository: Path, start_server: Start) -> None:
    recording = Recording(gate_open=False)
    server = start_server(
        model_repository, loader=recording.load, metrics_port=0, rest_port=0, queue_bound=1,
        max_batch_size=1, batch_timeout_ms=0,
    )  # fmt: skip
    with Client(server.target) as client:
        client.wait_ready(60)
    url = rest_url(server) + "/v1/models/gray/classify"

    def post(value: int) -> httpx.Response:
        headers = {"Content-Type": "image/png"}
        return httpx.post(url, content=flat_png(value), headers=headers, timeout=60)

    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        held = pool.submit(post, 10)
        assert recording.calling.wait(60), "the first request never reached the model"
        queued = pool.submit(post, 20)
        wait_for(lambda: server.call(lambda app: _depth(app)) == 1, what="a queued request")
        refused = post(30)
    finally:
        recording.gate.set()
        pool.shutdown(wait=True)
    assert refused.status_code == 429, refused.text
    assert "queue" in refused.json()["error"]
    assert held.result().status_code == 200 and queued.result().status_code == 200
    code = {"model": "gray", "version": "1", "code": "RESOURCE_EXHAUSTED"}
    assert metric(server, "clfserve_requests_total", **code) == 1


def _depth(app: Any) -> int:
    with app.dataplane.registry.acquire("gray", None, None) as handle:
        return int(handle.batcher.queue_depth)


def test_loading_is_503_then_ready(model_repository: Path, start_server: Start) -> None:
    gate = threading.Event()
    server = start_server(model_repository, loader=gated_loader(gate), rest_port=0)
    try:
        with httpx.Client(base_url=rest_url(server), timeout=60) as http:
            assert http.get("/v2/health/live").json() == {"live": True}
            assert http.get("/v2/health/ready").status_code == 503
            # The registry discovers the versions first, then holds them in LOADING.
            wait_for(lambda: http.get("/v1/models/gray").status_code == 200, what="discovery")
            assert http.get("/v2/models/gray/ready").json() == {"name": "gray", "ready": False}
            answer = http.post("/v1/models/gray/classify", content=PNG,
                               headers={"Content-Type": "image/png"})  # fmt: skip
            assert answer.status_code == 503, answer.text
            gate.set()
            wait_for(lambda: http.get("/v2/health/ready").status_code == 200, what="ready")
            assert http.get("/v2/models/gray/ready").status_code == 200
    finally:
        gate.set()


def test_internal_error_is_500_without_details(model_repository: Path, start_server: Start) -> None:
    server = start_server(model_repository, loader=BrokenClassifier, rest_port=0)
    with Client(server.target) as client:
        client.wait_ready(60)
    answer = httpx.post(
        rest_url(server) + "/v2/models/gray/infer",
        json=v2([B64], outputs=[{"name": "probabilities"}]),
        timeout=60,
    )
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error (RuntimeError); see the server log"}


def test_v2_timeout_parameter_is_the_deadline(model_repository: Path, start_server: Start) -> None:
    """Triton's `timeout` (µs): a request still queued behind a held model call when it passes
    is answered 504 and never reaches the model; the held one and a later one are answered."""
    recording = Recording(gate_open=False)
    server = start_server(model_repository, loader=recording.load, metrics_port=0, rest_port=0)
    with Client(server.target) as client:
        client.wait_ready(60)
    url = rest_url(server) + "/v2/models/gray/infer"

    def infer(value: int, timeout_us: int | None = None) -> httpx.Response:
        image = base64.b64encode(flat_png(value)).decode()
        body = v2([image])
        if timeout_us is not None:
            body["parameters"] = {"timeout": timeout_us}
        return httpx.post(url, json=body, timeout=60)

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        held = pool.submit(infer, 10)
        assert recording.calling.wait(60), "the first request never reached the model"
        expired = infer(128, timeout_us=300_000)
    finally:
        recording.gate.set()
        pool.shutdown(wait=True)
    assert expired.status_code == 504, expired.text
    assert held.result().status_code == 200 and infer(250, 60_000_000).status_code == 200
    seen = [round(float(row.mean()) * 255) for row in recording.rows("gray")]
    assert seen == [10, 250], "the expired request reached the model"
    code = {"model": "gray", "version": "1", "code": "DEADLINE_EXCEEDED"}
    assert metric(server, "clfserve_requests_total", **code) == 1
    assert infer(20, timeout_us=0).status_code == 504  # no time left at all
