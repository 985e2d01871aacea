"""clf.v1 protobuf <-> domain types, both directions (the server's and the client's).

The only module besides the servicer and the client that touches `clf_pb2`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from serve.dataplane import (
    ONLY_EMBEDDING,
    ClassifyRequest,
    ClassifyResult,
    ImageInput,
    Input,
    TensorBatch,
    TensorInput,
)
from serve.errors import InvalidInput
from serve.grpc import clf_pb2 as pb
from serve.manifest import Preprocessing
from serve.versions import ModelInfo, VersionInfo, VersionState

_DTYPES: dict[int, np.dtype] = {
    pb.DATA_TYPE_UINT8: np.dtype("<u1"),
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
}
_STATES = {
    VersionState.LOADING: pb.VERSION_STATE_LOADING,
    VersionState.AVAILABLE: pb.VERSION_STATE_AVAILABLE,
    VersionState.UNLOADING: pb.VERSION_STATE_UNLOADING,
    VersionState.FAILED: pb.VERSION_STATE_FAILED,
}
_STATES_BACK = {value: key for key, value in _STATES.items()}


# -- tensors ---------------------------------------------------------------------------------
def array_from_tensor(tensor: pb.Tensor, index: int | None = None) -> np.ndarray:
    """A Tensor message -> ndarray; a malformed tensor is an InvalidInput naming `index`."""
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise InvalidInput("tensor dtype must be DATA_TYPE_UINT8 or DATA_TYPE_FLOAT32", index)
    shape = tuple(int(d) for d in tensor.shape)
    if not shape or any(d <= 0 for d in shape):
        raise InvalidInput(f"tensor shape must be non-empty and positive, not {list(shape)}", index)
    expected = math.prod(shape) * dtype.itemsize  # exact: an int64 product can wrap to 0
    if len(tensor.data) != expected:
        raise InvalidInput(
            f"tensor data has {len(tensor.data)} bytes; shape {list(shape)} of {dtype.name} "
            f"needs {expected}",
            index,
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def tensor_from_array(array: np.ndarray) -> pb.Tensor:
    """uint8 arrays stay uint8; anything else is sent as float32."""
    dtype = np.dtype("<u1") if array.dtype == np.uint8 else np.dtype("<f4")
    data = np.ascontiguousarray(array, dtype=dtype)
    code = pb.DATA_TYPE_UINT8 if dtype.kind == "u" else pb.DATA_TYPE_FLOAT32
    return pb.Tensor(shape=list(data.shape), dtype=code, data=data.tobytes())


# -- classify --------------------------------------------------------------------------------
def _inputs_from_proto(items: Sequence[pb.Input]) -> list[Input]:
    inputs: list[Input] = []
    for index, item in enumerate(items):
        kind = item.WhichOneof("kind")
        if kind == "image":
            inputs.append(ImageInput(item.image))
        elif kind == "pixels":
            inputs.append(TensorInput(array_from_tensor(item.pixels, index)))
        elif kind == "model_input":
            inputs.append(TensorInput(array_from_tensor(item.model_input, index), True))
        else:
            raise InvalidInput("input has neither image, pixels nor model_input", index)
    return inputs


def _choice(spec: pb.ModelSpec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    return (
        spec.version if choice == "version" else None,
        spec.version_label if choice == "version_label" else None,
    )


def classify_request_from_proto(message: pb.ClassifyRequest) -> ClassifyRequest:
    version, label = _choice(message.model_spec)
    inputs = _inputs_from_proto(message.inputs)
    return ClassifyRequest(message.model_spec.name, inputs, version, label, message.top_k or 1)


def embed_request_from_proto(message: pb.EmbedRequest) -> ClassifyRequest:
    version, label = _choice(message.model_spec)
    inputs = _inputs_from_proto(message.inputs)
    return ClassifyRequest(
        message.model_spec.name, inputs, version, label, top_k=0, outputs=ONLY_EMBEDDING
    )


def _spec_to_proto(spec: pb.ModelSpec, request: ClassifyRequest) -> None:
    spec.name = request.model
    if request.version is not None:
        spec.version = request.version
    elif request.label:
        spec.version_label = request.label


def _inputs_to_proto(
    message: pb.ClassifyRequest | pb.EmbedRequest, request: ClassifyRequest
) -> None:
    items = request.inputs
    if isinstance(items, TensorBatch):  # pragma: no cover - only serve.client calls it, with lists
        items = [TensorInput(row, items.preprocessed) for row in items.array]
    for item in items:
        if isinstance(item, ImageInput):
            message.inputs.add(image=item.data)
        elif item.preprocessed:
            message.inputs.add(model_input=tensor_from_array(item.array))
        else:
            message.inputs.add(pixels=tensor_from_array(item.array))


def classify_request_to_proto(request: ClassifyRequest, request_id: str = "") -> pb.ClassifyRequest:
    message = pb.ClassifyRequest(top_k=request.top_k, request_id=request_id)
    _spec_to_proto(message.model_spec, request)
    _inputs_to_proto(message, request)
    return message


def embed_request_to_proto(request: ClassifyRequest, request_id: str = "") -> pb.EmbedRequest:
    message = pb.EmbedRequest(request_id=request_id)
    _spec_to_proto(message.model_spec, request)
    _inputs_to_proto(message, request)
    return message


def embed_result_to_proto(result: ClassifyResult, request_id: str = "") -> pb.EmbedResponse:
    assert result.embeddings is not None
    message = pb.EmbedResponse(request_id=request_id)
    message.model_spec.name = result.model
    message.model_spec.version = result.version
    message.embeddings.CopyFrom(tensor_from_array(result.embeddings.astype(np.float32)))
    if (  # pragma: no branch - the data plane embeds only if the manifest has an embedding
        result.manifest is not None and result.manifest.embedding is not None
    ):
        message.layer = result.manifest.embedding.layer
    return message


def embed_result_from_proto(message: pb.EmbedResponse) -> tuple[str, int, np.ndarray]:
    """(model, version, float32 [inputs, dimension])."""
    vectors = array_from_tensor(message.embeddings).astype(np.float32)
    return message.model_spec.name, int(message.model_spec.version), vectors


def classify_result_to_proto(result: ClassifyResult, request_id: str = "") -> pb.ClassifyResponse:
    message = pb.ClassifyResponse(labels=result.labels, request_id=request_id)
    message.model_spec.name = result.model
    message.model_spec.version = result.version
    for row, best in zip(result.probabilities, result.top_k, strict=True):
        entry = message.results.add(probabilities=row.tolist())
        for label, score in best:
            entry.top_k.add(label=label, score=score)
    return message


def classify_result_from_proto(message: pb.ClassifyResponse) -> ClassifyResult:
    probabilities = np.array([list(r.probabilities) for r in message.results], dtype=np.float32)
    return ClassifyResult(
        model=message.model_spec.name,
        version=message.model_spec.version,
        labels=tuple(message.labels),
        probabilities=probabilities.reshape(len(message.results), len(message.labels)),
        ranked=[[(s.label, s.score) for s in r.top_k] for r in message.results],
    )


# -- models ----------------------------------------------------------------------------------
def _version_to_proto(info: VersionInfo) -> pb.VersionInfo:
    message = pb.VersionInfo(
        version=info.version,
        state=_STATES[info.state],
        reason=info.reason,
        labels=info.labels,
        classes=info.classes,
        architecture=info.architecture,
    )
    if info.test_accuracy is not None:
        message.test_accuracy = info.test_accuracy
    pre = info.preprocessing
    if pre is not None:
        message.input.shape.extend([-1, *pre.input_shape])
        message.input.dtype = pb.DATA_TYPE_FLOAT32
        message.preprocessing.CopyFrom(
            pb.Preprocessing(
                color_mode=pre.color_mode,
                height=pre.size[0],
                width=pre.size[1],
                resize=pre.resize,
                interpolation=pre.interpolation,
                scale=pre.scale,
                offset=pre.offset,
                filters=pre.filters,
            )
        )
    return message


def model_info_to_proto(info: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=info.name,
        default_version=info.default_version or 0,
        versions=[_version_to_proto(v) for v in info.versions],
    )


def _version_from_proto(message: pb.VersionInfo) -> VersionInfo:
    pre = None
    if message.HasField("preprocessing"):
        p = message.preprocessing
        pre = Preprocessing(
            color_mode=p.color_mode,  # type: ignore[arg-type]
            size=(p.height, p.width),
            resize=p.resize,  # type: ignore[arg-type]
            interpolation=p.interpolation,  # type: ignore[arg-type]
            scale=p.scale,
            offset=p.offset,
            filters=tuple(p.filters),
        )
    return VersionInfo(
        version=message.version,
        state=_STATES_BACK[message.state],
        reason=message.reason,
        labels=tuple(message.labels),
        classes=tuple(message.classes),
        preprocessing=pre,
        architecture=message.architecture,
        test_accuracy=message.test_accuracy if message.HasField("test_accuracy") else None,
    )


def model_info_from_proto(message: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=message.name,
        default_version=message.default_version or None,
        versions=tuple(_version_from_proto(v) for v in message.versions),
    )


def model_infos_to_proto(infos: Sequence[ModelInfo]) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(models=[model_info_to_proto(i) for i in infos])
