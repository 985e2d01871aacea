"""Open Inference Protocol v2 (KServe / Triton) protobuf <-> domain types.

How our concepts appear in the v2 API:

| ours                       | v2                                                              |
|----------------------------|-----------------------------------------------------------------|
| model name                 | `model_name` / `name`                                           |
| version or label           | `model_version`: "" (default), "3", or a label ("stable", ...)  |
| model input                | input `images` FP32 [N, H, W, C]                                |
| raw pixels                 | input `images` UINT8 [N, H, W, C] or [N, H, W]                  |
| encoded images             | input `images` or `images_bytes` BYTES [N] (or [N, 1]); model   |
|                            | metadata lists both `images` (FP32) and `images_bytes` (BYTES)  |
| probabilities              | output `probabilities` FP32 [N, classes], manifest class order  |
| top-k labels               | Triton's classification extension: requested output parameter   |
|                            | `classification: k` -> BYTES [N, k] "score:index:label"         |
| embeddings                 | requested output `embedding` -> FP32 [N, d] (alone or beside    |
|                            | `probabilities`); NOT_FOUND for a version without the signature |

Tensors arrive in `contents` or in `raw_input_contents`; outputs go back the same way unless
the request says otherwise with the bool parameter `binary_data_output` (request) or
`binary_data` (requested output), as Triton's clients name them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from inference import grpc_service_pb2 as pb  # generated; serve/grpc/__init__ puts it on the path

from serve.dataplane import (
    EMBEDDING,
    PROBABILITIES,
    ClassifyRequest,
    ClassifyResult,
    ImageInput,
    TensorBatch,
)
from serve.digits import ascii_digits
from serve.errors import InvalidInput
from serve.grpc.kserve_bytes import join_bytes, split_bytes
from serve.manifest_entries import Signature
from serve.prepare import Inputs

CLASSIFICATION = "classification"


@dataclass(frozen=True)
class Reply:
    """How to answer: raw bytes or `contents`, and probabilities and/or top-k per input."""

    raw: bool
    top_k: int = 0  # > 0: the classification output instead of the probabilities
    embedding: bool = False  # the `embedding` output was asked for
    probabilities: bool = True  # the signature's output (probabilities or top-k) too

    @property
    def outputs(self) -> frozenset[str]:
        """What the data plane must compute."""
        return frozenset({PROBABILITIES} if self.probabilities else ()) | frozenset(
            {EMBEDDING} if self.embedding else ()
        )


def encoded_input(signature: Signature) -> str:
    """The name model metadata gives encoded images (BYTES), beside the FP32 model input."""
    return f"{signature.input}_bytes"


def version_choice(text: str) -> tuple[int | None, str | None]:
    """`model_version` -> (version, label): "" the default, digits a version, else a label."""
    text = text.strip()
    if not text:
        return None, None
    if ascii_digits(text.lstrip("-")):
        return int(text), None
    return None, text


# -- requests --------------------------------------------------------------------------------
def _count(shape: tuple[int, ...], name: str) -> int:
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {name!r} has a negative dimension in shape {list(shape)}")
    return math.prod(shape)  # exact: an int64 product can wrap to 0


def _numbers(values: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    if values.size != _count(shape, name):
        raise InvalidInput(
            f"input {name!r} has {values.size} elements; shape {list(shape)} needs "
            f"{_count(shape, name)}"
        )
    return values.reshape(shape)


def _inputs(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Inputs:
    name, shape = tensor.name, tuple(int(d) for d in tensor.shape)
    if tensor.datatype == "BYTES":
        items = split_bytes(raw, name) if raw is not None else list(tensor.contents.bytes_contents)
        column = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
        if not column or len(items) != _count(shape, name):
            raise InvalidInput(
                f"input {name!r}: BYTES images must be shaped [N] or [N, 1]; "
                f"got {len(items)} elements for shape {list(shape)}"
            )
        return [ImageInput(item) for item in items]
    if tensor.datatype == "FP32":
        if raw is not None and len(raw) % 4:
            raise InvalidInput(f"input {name!r}: raw FP32 data is not a multiple of 4 bytes")
        values = (
            np.frombuffer(raw, "<f4")
            if raw is not None
            else np.asarray(tensor.contents.fp32_contents, np.float32)
        )
        array = _numbers(values, shape, name)
        if array.ndim != 4:
            raise InvalidInput(f"input {name!r} must be FP32 [N, H, W, C], not {list(shape)}")
        return TensorBatch(array, preprocessed=True)
    if tensor.datatype == "UINT8":
        if raw is not None:
            values = np.frombuffer(raw, np.uint8)
        else:
            wide = np.asarray(tensor.contents.uint_contents, np.int64)
            if wide.size and wide.max() > 255:
                raise InvalidInput(f"input {name!r}: UINT8 values must lie in 0..255")
            values = wide.astype(np.uint8)
        array = _numbers(values, shape, name)
        if array.ndim not in (3, 4):
            raise InvalidInput(f"input {name!r} must be UINT8 [N, H, W(, C)], not {list(shape)}")
        return TensorBatch(array)
    raise InvalidInput(
        f"input {name!r} has datatype {tensor.datatype!r}; expected FP32 (model input), "
        "UINT8 (pixels) or BYTES (encoded images)"
    )


def _flag(parameters: object, key: str) -> bool | None:
    if key in parameters:  # type: ignore[operator]
        return bool(parameters[key].bool_param)  # type: ignore[index]
    return None


def _reply(request: pb.ModelInferRequest, signature: Signature) -> Reply:
    raw = bool(request.raw_input_contents)
    top_k = 0
    names = {output.name for output in request.outputs}
    for output in request.outputs:
        if output.name == EMBEDDING:
            asked = _flag(output.parameters, "binary_data")
            raw = raw if asked is None else asked
            continue
        if output.name != signature.output:
            raise InvalidInput(
                f"unexpected inference output {output.name!r} for model "
                f"{request.model_name!r}; it has [{signature.output!r}, {EMBEDDING!r}]"
            )
        if CLASSIFICATION in output.parameters:
            top_k = int(output.parameters[CLASSIFICATION].int64_param)
            if top_k < 1:
                raise InvalidInput(f"classification count must be >= 1, not {top_k}")
        asked = _flag(output.parameters, "binary_data")
        raw = raw if asked is None else asked
    asked = _flag(request.parameters, "binary_data_output")
    embedding = EMBEDDING in names
    probabilities = not names or signature.output in names
    return Reply(raw if asked is None else asked, top_k, embedding, probabilities)


def classify_request_from_infer(
    request: pb.ModelInferRequest, signature: Signature
) -> tuple[ClassifyRequest, Reply]:
    """A ModelInferRequest -> the domain request and how to shape the answer."""
    sent = [tensor.name for tensor in request.inputs]
    accepted = (signature.input, encoded_input(signature))
    if len(sent) != 1 or sent[0] not in accepted:
        missing = [] if set(sent) & set(accepted) else [signature.input]
        raise InvalidInput(
            f"expected 1 input but got {len(sent)} for model {request.model_name!r}: sent "
            f"{sent}, unexpected {[n for n in sent if n not in accepted]}, missing {missing}"
        )
    if sent[0] != signature.input and request.inputs[0].datatype != "BYTES":
        raise InvalidInput(f"input {sent[0]!r} takes BYTES (encoded images) only")
    raw_contents = list(request.raw_input_contents)
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise InvalidInput(
            f"{len(raw_contents)} raw_input_contents for {len(request.inputs)} inputs"
        )
    tensor = request.inputs[0]
    if raw_contents and tensor.HasField("contents"):
        raise InvalidInput(f"input {tensor.name!r} has both contents and raw_input_contents")
    reply = _reply(request, signature)
    version, label = version_choice(request.model_version)
    inputs = _inputs(tensor, raw_contents[0] if raw_contents else None)
    domain = ClassifyRequest(
        request.model_name, inputs, version, label, top_k=reply.top_k, outputs=reply.outputs
    )
    return domain, reply


# -- responses -------------------------------------------------------------------------------
def infer_response(
    result: ClassifyResult, reply: Reply, signature: Signature, request_id: str = ""
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=result.model, model_version=str(result.version), id=request_id
    )
    if reply.probabilities:
        _probabilities(response, result, reply, signature)
    if reply.embedding and result.embeddings is not None:
        _fp32(response, EMBEDDING, result.embeddings, reply.raw)
    return response


def _fp32(response: pb.ModelInferResponse, name: str, values: np.ndarray, raw: bool) -> None:
    array = np.ascontiguousarray(values, dtype="<f4")
    output = response.outputs.add(name=name, datatype="FP32", shape=array.shape)
    if raw:
        response.raw_output_contents.append(array.tobytes())
    else:
        output.contents.fp32_contents.extend(array.ravel().tolist())


def _probabilities(
    response: pb.ModelInferResponse, result: ClassifyResult, reply: Reply, signature: Signature
) -> None:
    if reply.top_k:
        output = response.outputs.add(name=signature.output)
        index = {label: i for i, label in enumerate(result.labels)}
        rows = [[f"{s:f}:{index[label]}:{label}".encode() for label, s in r] for r in result.top_k]
        output.datatype = "BYTES"
        output.shape.extend([len(rows), len(rows[0]) if rows else 0])
        flat = [item for row in rows for item in row]
        if reply.raw:
            response.raw_output_contents.append(join_bytes(flat))
        else:
            output.contents.bytes_contents.extend(flat)
        return
    _fp32(response, signature.output, result.probabilities, reply.raw)
