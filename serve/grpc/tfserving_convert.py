"""TensorFlow Serving protobuf (tensorflow-serving-api's generated code) <-> domain types.

How our concepts appear in TF Serving's API:

| ours                         | TensorFlow Serving                                            |
|------------------------------|---------------------------------------------------------------|
| model name                   | `ModelSpec.name`                                              |
| version / label              | `ModelSpec.version` (Int64Value) / `ModelSpec.version_label`  |
| manifest signature           | `signature_name` "serving_default": input `images`, output    |
|                              | `probabilities` (names from the manifest)                     |
| model input (preprocessed)   | DT_FLOAT [N, H, W, C] (`float_val` or `tensor_content`)       |
| raw pixels                   | DT_UINT8 [N, H, W, C] or [N, H, W]                            |
| encoded images               | DT_STRING [N] (PNG/JPEG/... bytes, preprocessed by manifest)  |
| probabilities, class order   | DT_FLOAT [N, classes] in `float_val`, manifest class order    |
| embeddings                   | `signature_name` "embedding": input `images`, output          |
|                              | `embedding` DT_FLOAT [N, d] (NOT_FOUND without the signature)  |
| version states               | LOADING, AVAILABLE, UNLOADING; FAILED -> END with an error    |
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
)

from serve.dataplane import (
    EMBEDDING,
    ONLY_EMBEDDING,
    ClassifyRequest,
    ClassifyResult,
    ImageInput,
    TensorBatch,
)
from serve.errors import InvalidInput, VersionNotFound
from serve.manifest import Manifest
from serve.manifest_entries import Signature
from serve.prepare import Inputs

SIGNATURE_FIELD = "signature_def"  # the only metadata field TF Serving (and we) answer
PREDICT_METHOD = "tensorflow/serving/predict"
_DTYPE_NAMES = {v: k for k, v in types_pb2.DataType.items()}


def version_choice(spec: model_pb2.ModelSpec) -> tuple[int | None, str | None]:
    """ModelSpec -> (version, label); neither means the default version."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


@contextlib.contextmanager
def labels_are_arguments(label: str | None) -> Iterator[None]:
    """TF Serving answers an unknown version label INVALID_ARGUMENT (a version: NOT_FOUND)."""
    try:
        yield
    except VersionNotFound as exc:
        if label is None:
            raise
        raise InvalidInput(f"Unrecognized servable version label: {label} ({exc})") from exc


def check_signature(spec: model_pb2.ModelSpec, signature: Signature) -> bool:
    """Whether the request names the `embedding` signature (else the serving one)."""
    if spec.signature_name not in ("", signature.name, EMBEDDING):
        raise InvalidInput(
            f'Serving signature name: "{spec.signature_name}" not found in signature def; '
            f'the model has "{signature.name}" and "{EMBEDDING}"'
        )
    return spec.signature_name == EMBEDDING


def _shape(tensor: tensor_pb2.TensorProto) -> tuple[int, ...]:
    return tuple(int(d.size) for d in tensor.tensor_shape.dim)


def _numbers(tensor: tensor_pb2.TensorProto, name: str, dtype: str, values: object) -> np.ndarray:
    shape = _shape(tensor)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {name!r} has an unknown dimension in shape {list(shape)}")
    if tensor.tensor_content:
        if len(tensor.tensor_content) % np.dtype(dtype).itemsize:
            raise InvalidInput(f"input {name!r}: tensor_content is not a whole number of {dtype}")
        array = np.frombuffer(tensor.tensor_content, dtype=dtype)
    else:
        array = np.asarray(values, dtype=np.int64 if dtype == "<u1" else dtype)
        if dtype == "<u1":
            if array.size and (array.min() < 0 or array.max() > 255):
                raise InvalidInput(f"input {name!r}: DT_UINT8 values must lie in 0..255")
            array = array.astype(np.uint8)
    expected = math.prod(shape)  # exact: an int64 product can wrap to 0
    if array.size != expected:
        raise InvalidInput(
            f"input {name!r} has {array.size} values; its shape {list(shape)} needs {expected}"
        )
    return array.reshape(shape)


def inputs_from_tensor(tensor: tensor_pb2.TensorProto, name: str) -> Inputs:
    """One TensorProto -> one domain input per batch row (its first dimension)."""
    if tensor.dtype == types_pb2.DT_STRING:
        shape = _shape(tensor)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(f"input {name!r}: DT_STRING images must be [N] or [N, 1]")
        if shape and math.prod(shape) != len(tensor.string_val):
            raise InvalidInput(
                f"input {name!r} has {len(tensor.string_val)} strings; shape {list(shape)}"
            )
        return [ImageInput(data) for data in tensor.string_val]
    if tensor.dtype == types_pb2.DT_FLOAT:
        array = _numbers(tensor, name, "<f4", tensor.float_val)
        if array.ndim != 4:
            raise InvalidInput(
                f"input {name!r} must be DT_FLOAT [batch, height, width, channels], "
                f"not {list(array.shape)}"
            )
        return TensorBatch(array, preprocessed=True)
    if tensor.dtype == types_pb2.DT_UINT8:
        array = _numbers(tensor, name, "<u1", tensor.int_val)
        if array.ndim not in (3, 4):
            raise InvalidInput(
                f"input {name!r} must be DT_UINT8 [batch, height, width(, channels)], "
                f"not {list(array.shape)}"
            )
        return TensorBatch(array)
    dtype = _DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype))
    raise InvalidInput(
        f"input {name!r} is {dtype}; expected DT_FLOAT (model input), DT_UINT8 (pixels) "
        "or DT_STRING (encoded images)"
    )


def classify_request_from_predict(
    request: predict_pb2.PredictRequest, signature: Signature
) -> ClassifyRequest:
    """A PredictRequest -> the domain request; input and output names must match `signature`."""
    embedding = check_signature(request.model_spec, signature)
    output = EMBEDDING if embedding else signature.output
    sent, expected = set(request.inputs), {signature.input}
    if sent != expected:
        raise InvalidInput(
            f"input names do not match signature {signature.name!r}: sent {sorted(sent)}; "
            f"extra {sorted(sent - expected)}, missing {sorted(expected - sent)}"
        )
    unknown = [name for name in request.output_filter if name != output]
    if unknown:
        raise InvalidInput(
            f"output tensor alias not found in signature: {unknown}; outputs are [{output!r}]"
        )
    version, label = version_choice(request.model_spec)
    inputs = inputs_from_tensor(request.inputs[signature.input], signature.input)
    if embedding:
        return ClassifyRequest(
            request.model_spec.name, inputs, version, label, top_k=0, outputs=ONLY_EMBEDDING
        )
    return ClassifyRequest(request.model_spec.name, inputs, version, label, top_k=0)


def _tensor_shape(dims: list[int]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


def _spec(name: str, version: int, signature: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    spec.version.value = version
    return spec


def predict_response(result: ClassifyResult, signature: Signature) -> predict_pb2.PredictResponse:
    """Probabilities (or, asked of the `embedding` signature, embeddings) as DT_FLOAT
    `float_val`, as TensorFlow Serving answers."""
    name, output_name, values = signature.name, signature.output, result.probabilities
    if result.embeddings is not None:
        name, output_name, values = EMBEDDING, EMBEDDING, result.embeddings
    response = predict_pb2.PredictResponse(model_spec=_spec(result.model, result.version, name))
    output = response.outputs[output_name]
    output.dtype = types_pb2.DT_FLOAT
    output.tensor_shape.CopyFrom(_tensor_shape(list(values.shape)))
    output.float_val.extend(values.ravel().tolist())
    return response


def metadata_response(
    name: str, version: int, manifest: Manifest, fields: list[str]
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """The model's serving signature as a SignatureDefMap under metadata["signature_def"]."""
    if not fields:
        raise InvalidInput("GetModelMetadataRequest must specify at least one metadata_field")
    unsupported = [field for field in fields if field != SIGNATURE_FIELD]
    if unsupported:
        raise InvalidInput(f"Metadata field {unsupported[0]} is not supported")
    sig = manifest.signature
    definition = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    definition.inputs[sig.input].CopyFrom(
        meta_graph_pb2.TensorInfo(
            name=f"{sig.name}_{sig.input}:0",
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=_tensor_shape([-1, *manifest.input_shape]),
        )
    )
    definition.outputs[sig.output].CopyFrom(
        meta_graph_pb2.TensorInfo(
            name="StatefulPartitionedCall:0",
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=_tensor_shape([-1, len(manifest.classes)]),
        )
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.signature_def[sig.name].CopyFrom(definition)
    if manifest.embedding is not None:
        embedding = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
        embedding.inputs[sig.input].CopyFrom(definition.inputs[sig.input])
        embedding.inputs[sig.input].name = f"{EMBEDDING}_{sig.input}:0"
        embedding.outputs[EMBEDDING].CopyFrom(
            meta_graph_pb2.TensorInfo(
                name="StatefulPartitionedCall_1:0",
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=_tensor_shape([-1, manifest.embedding.dimension]),
            )
        )
        signatures.signature_def[EMBEDDING].CopyFrom(embedding)
    response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=_spec(name, version))
    response.metadata[SIGNATURE_FIELD].Pack(signatures)
    return response
