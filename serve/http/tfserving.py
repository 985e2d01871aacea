"""TensorFlow Serving's REST API: model status, metadata and Predict, as on its port 8501.

    GET  /v1/models/mnist[/versions/3 | /labels/stable]            status of each version
    GET  /v1/models/mnist[...]/metadata                             the serving signature
    POST /v1/models/mnist[...]:predict  {"instances": [{"b64": "<png>"}]}  -> {"predictions": ...}
                                        {"inputs": {"images": [[[[0.0], ...]]]}} -> {"outputs": ...}
         ...:predict  {"signature_name": "embedding", "instances": [...]}  -> embeddings [N, d]

The JSON becomes the PredictRequest (and status/metadata answers the protobuf) the gRPC service
uses (`serve.grpc.tfserving_convert`), so names, shapes and error messages are the same: numbers
are the DT_FLOAT model input [N, H, W, C], `{"b64": ...}` objects encoded images (DT_STRING).
Errors are `{"error": "..."}`; an unknown label is 400, as TF Serving answers it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp import web
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from serve.dataplane import ClassifyRequest
from serve.digits import ascii_digits
from serve.errors import InvalidInput
from serve.grpc import tfserving_convert as convert
from serve.grpc.tfserving_status import status_response
from serve.http.app import decode_b64, plane, read_json
from serve.manifest import Manifest

_Choice = tuple[int | None, str | None]


def _choice(request: web.Request) -> _Choice:
    info = request.match_info
    if "version" in info:
        if not ascii_digits(info["version"]):
            raise InvalidInput(f"version must be a non-negative integer, not {info['version']!r}")
        return int(info["version"]), None
    return None, info.get("label")


def _is_b64(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"b64"}


def tensor(values: Any, name: str) -> tensor_pb2.TensorProto:
    """A JSON value (one row per instance) -> DT_STRING ({"b64"} or strings) or DT_FLOAT."""
    proto = tensor_pb2.TensorProto()
    rows = values if isinstance(values, list) else [values]
    if rows and all(_is_b64(v) or isinstance(v, str) for v in rows):
        proto.dtype = types_pb2.DT_STRING
        proto.tensor_shape.dim.add(size=len(rows))
        where = f"input {name!r}"
        proto.string_val.extend(decode_b64(v, where) if _is_b64(v) else v.encode() for v in rows)
        return proto
    try:
        array = np.asarray(values, dtype="<f4")
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {name!r}: not a numeric tensor nor b64 images ({exc})") from exc
    proto.dtype = types_pb2.DT_FLOAT
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_content = array.tobytes()
    return proto


def _columns(doc: Any, default: str) -> tuple[dict[str, Any], bool]:
    """The request's inputs by name, and whether it used the row (`instances`) format."""
    if not isinstance(doc, dict) or ("instances" in doc) == ("inputs" in doc):
        raise InvalidInput("the request must be a JSON object with either 'instances' or 'inputs'")
    if "inputs" in doc:
        value = doc["inputs"]
        named = isinstance(value, dict) and not _is_b64(value)
        return (value if named else {default: value}), False
    rows = doc["instances"]
    if not isinstance(rows, list):
        raise InvalidInput("'instances' must be a list, one item per instance")
    if not rows or not all(isinstance(r, dict) and not _is_b64(r) for r in rows):
        return {default: rows}, True
    names = set(rows[0])
    for index, row in enumerate(rows):
        if set(row) != names:
            raise InvalidInput(f"instance {index} has inputs {sorted(row)}, not {sorted(names)}")
    return {name: [row[name] for row in rows] for name in names}, True


async def predict(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    version, label = _choice(request)
    doc = await read_json(request)
    rows: list[bool] = []

    def build(manifest: Manifest) -> ClassifyRequest:
        sig = manifest.signature
        columns, row_format = _columns(doc, sig.input)
        rows.append(row_format)
        message = predict_pb2.PredictRequest()
        message.model_spec.name = name
        message.model_spec.signature_name = str(doc.get("signature_name", ""))
        for key, value in columns.items():
            message.inputs[key].CopyFrom(tensor(value, key))
        domain = convert.classify_request_from_predict(message, sig)
        return ClassifyRequest(name, domain.inputs, version, label, 0, domain.outputs)

    with convert.labels_are_arguments(label):
        result = await plane(request).infer(name, version, label, build)
    values = result.probabilities if result.embeddings is None else result.embeddings
    return web.json_response({"predictions" if rows[0] else "outputs": values.tolist()})


def _json(message: Any) -> web.Response:
    return web.json_response(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


async def status(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    version, label = _choice(request)
    with convert.labels_are_arguments(label):
        info = plane(request).get_model(name)
        response = status_response(info, version, label)
    for entry in response.model_version_status:
        entry.status.SetInParent()  # TF Serving prints {"error_code": "OK", ...} too
    return _json(response)


async def metadata(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    version, label = _choice(request)
    with convert.labels_are_arguments(label):
        number, manifest = plane(request).describe(name, version, label)
    return _json(convert.metadata_response(name, number, manifest, [convert.SIGNATURE_FIELD]))


def add_routes(app: web.Application) -> None:
    model = "/v1/models/{model:[^/:]+}"
    for base in (model, model + "/versions/{version:[^/:]+}", model + "/labels/{label:[^/:]+}"):
        app.router.add_get(base, status)
        app.router.add_get(base + "/metadata", metadata)
        app.router.add_post(base + ":predict", predict)
