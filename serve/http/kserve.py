"""The Open Inference Protocol v2 over REST (KServe, Triton, MLServer), e.g. `tritonclient.http`:

    client = tritonclient.http.InferenceServerClient("localhost:8501")
    client.infer("mnist", [images])      # binary tensor data by default

A request's JSON (and binary tensor data: `Inference-Header-Content-Length` bytes of JSON, then
each input's `binary_data_size` bytes in order) becomes the same `ModelInferRequest` the gRPC
service takes, so checks, messages and answers are the gRPC ones (`serve.grpc.kserve_convert`).
JSON tensors: FP32 and UINT8 numbers (nested or flat), BYTES as base64 strings (encoded images
are not UTF-8 text) or `{"b64": ...}`. Outputs are JSON `data` unless `binary_data` (output
parameter) or `binary_data_output` (request parameter) asks for binary data. The request
parameter `timeout` (microseconds, as tritonclient's `infer(timeout=...)` sends it) is the
request's deadline: past it, 504.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
from aiohttp import web
from inference import grpc_service_pb2 as pb  # generated; serve.grpc puts it on the path

from serve.dataplane import ClassifyRequest
from serve.digits import ascii_digits
from serve.errors import InvalidInput, ServeError
from serve.grpc import kserve as grpc_kserve
from serve.grpc import kserve_convert as convert
from serve.grpc.kserve_bytes import join_bytes
from serve.grpc.kserve_metadata import metadata_response
from serve.http.app import SERVER, decode_b64, parse_json, plane
from serve.manifest import Manifest

HEADER_LENGTH = "Inference-Header-Content-Length"
TIMEOUT = "timeout"


def _flat(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flat(item)
    else:
        yield data


def _raw(data: Any, datatype: str, name: str) -> bytes:
    """JSON `data` -> the tensor's raw bytes (as `raw_input_contents` carries them)."""
    if data is None:
        raise InvalidInput(f"input {name!r} has neither data nor binary_data_size")
    try:
        if datatype == "FP32":
            return np.asarray(data, dtype="<f4").tobytes()
        if datatype == "UINT8":
            values = np.asarray(data)
            wrong = values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255
            if values.size and wrong:
                raise InvalidInput(f"input {name!r}: UINT8 values must be integers in 0..255")
            return values.astype(np.uint8).tobytes()
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {name!r}: data is not a {datatype} array ({exc})") from exc
    if datatype == "BYTES":
        items = [decode_b64(item, f"input {name!r}") for item in _flat(data)]
        return join_bytes(items)
    return b""  # the converter names the unsupported datatype


def infer_request(body: bytes, header_length: str | None, name: str, version: str) -> Any:
    """The REST body -> (ModelInferRequest, its JSON); raises InvalidInput."""
    binary = b""
    if header_length is not None:
        if not ascii_digits(header_length) or int(header_length) > len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {header_length!r} does not fit the body")
        body, binary = body[: int(header_length)], body[int(header_length) :]
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidInput("the request must be a JSON object with an 'inputs' list")
    request_id = str(doc.get("id", ""))
    request = pb.ModelInferRequest(model_name=name, model_version=version, id=request_id)
    offset = 0
    try:
        for item in doc["inputs"]:
            tensor = request.inputs.add(
                name=str(item["name"]), datatype=str(item["datatype"]),
                shape=[int(d) for d in item["shape"]],
            )  # fmt: skip
            size = (item.get("parameters") or {}).get("binary_data_size")
            if size is None:
                raw = _raw(item.get("data"), tensor.datatype, tensor.name)
                request.raw_input_contents.append(raw)
                continue
            if int(size) < 0 or offset + int(size) > len(binary):
                raise InvalidInput(f"input {tensor.name!r}: binary_data_size {size} past the data")
            request.raw_input_contents.append(binary[offset : offset + int(size)])
            offset += int(size)
        options = doc.get("parameters") or {}
        raw_out = bool(options.get("binary_data_output", False))
        if options.get("timeout") is not None:  # Triton's deadline, in microseconds
            request.parameters[TIMEOUT].int64_param = int(options[TIMEOUT])
        for item in doc.get("outputs") or []:
            output = request.outputs.add(name=str(item["name"]))
            parameters = item.get("parameters") or {}
            if convert.CLASSIFICATION in parameters:
                count = int(parameters[convert.CLASSIFICATION])
                output.parameters[convert.CLASSIFICATION].int64_param = count
            raw_out = bool(parameters.get("binary_data", raw_out))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidInput(f"malformed inference request: {type(exc).__name__} {exc}") from exc
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    request.parameters["binary_data_output"].bool_param = raw_out
    return request


def infer_body(response: pb.ModelInferResponse) -> web.Response:
    """A ModelInferResponse -> JSON, or JSON then binary data (see `HEADER_LENGTH`)."""
    outputs: list[dict[str, Any]] = []
    for index, output in enumerate(response.outputs):
        entry: dict[str, Any] = {
            "name": output.name, "datatype": output.datatype, "shape": list(output.shape)
        }  # fmt: skip
        if response.raw_output_contents:
            entry["parameters"] = {"binary_data_size": len(response.raw_output_contents[index])}
        elif output.datatype == "BYTES":
            entry["data"] = [item.decode() for item in output.contents.bytes_contents]
        else:
            entry["data"] = list(output.contents.fp32_contents)
        outputs.append(entry)
    doc = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    header = json.dumps({**doc, "outputs": outputs}).encode()
    if not response.raw_output_contents:
        return web.Response(body=header, content_type="application/json")
    return web.Response(
        body=header + b"".join(response.raw_output_contents),
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


async def infer(request: web.Request) -> web.Response:
    name, version = request.match_info["model"], request.match_info.get("version", "")
    message = infer_request(await request.read(), request.headers.get(HEADER_LENGTH), name, version)
    replies: list[convert.Reply] = []

    def build(manifest: Manifest) -> ClassifyRequest:
        domain, reply = convert.classify_request_from_infer(message, manifest.signature)
        replies.append(reply)
        return domain

    timeout = None
    if TIMEOUT in message.parameters:
        timeout = message.parameters[TIMEOUT].int64_param / 1e6
    choice = convert.version_choice(version)
    result = await plane(request).infer(name, *choice, build, timeout)
    assert result.manifest is not None
    sig = result.manifest.signature
    return infer_body(convert.infer_response(result, replies[0], sig, message.id))


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    ok = plane(request).ready and not request.app[SERVER].stopping
    return web.json_response({"ready": ok}, status=200 if ok else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return web.json_response({
        "name": grpc_kserve.SERVER_NAME,
        "version": grpc_kserve._server_version(),
        "extensions": grpc_kserve.EXTENSIONS,
    })  # fmt: skip


async def model_metadata(request: web.Request) -> web.Response:
    name, version = request.match_info["model"], request.match_info.get("version", "")
    dataplane = plane(request)
    _, manifest = dataplane.describe(name, *convert.version_choice(version))
    meta = metadata_response(dataplane.get_model(name), manifest)
    tensors = [
        [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in group]
        for group in (meta.inputs, meta.outputs)
    ]
    return web.json_response({
        "name": meta.name, "versions": list(meta.versions), "platform": meta.platform,
        "inputs": tensors[0], "outputs": tensors[1],
    })  # fmt: skip


async def model_ready(request: web.Request) -> web.Response:
    name, version = request.match_info["model"], request.match_info.get("version", "")
    try:
        plane(request).describe(name, *convert.version_choice(version))
    except ServeError:  # unknown, loading, failed or unloading: not ready
        return web.json_response({"name": name, "ready": False}, status=503)
    return web.json_response({"name": name, "ready": True})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2", server_metadata)
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.router.add_get(base, model_metadata)
        app.router.add_get(base + "/ready", model_ready)
        app.router.add_post(base + "/infer", infer)
