"""TensorFlow Serving's GetModelStatus: each version's state (and a failed one's reason) for the
versions a request names, as the gRPC and REST front doors answer it."""

from __future__ import annotations

from tensorflow_serving.apis import get_model_status_pb2

from serve.errors import VersionNotFound
from serve.versions import ModelInfo, VersionInfo, VersionState

_State = get_model_status_pb2.ModelVersionStatus.State
_STATES = {
    VersionState.LOADING: _State.LOADING,
    VersionState.AVAILABLE: _State.AVAILABLE,
    VersionState.UNLOADING: _State.UNLOADING,
    VersionState.FAILED: _State.END,
}
_GRPC_UNKNOWN = 2  # tensorflow.error.Code.UNKNOWN: a version that failed to load


def _pick(info: ModelInfo, version: int | None, label: str | None) -> list[VersionInfo]:
    if version is None and label is None:
        return list(info.versions)
    found = [v for v in info.versions if v.version == version or (label and label in v.labels)]
    if not found:
        raise VersionNotFound(info.name, label if label is not None else str(version))
    return found


def status_response(
    info: ModelInfo, version: int | None, label: str | None
) -> get_model_status_pb2.GetModelStatusResponse:
    """Every version's state (or the one asked for), newest first."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for item in _pick(info, version, label):
        entry = response.model_version_status.add(version=item.version, state=_STATES[item.state])
        if item.state is VersionState.FAILED:
            entry.status.error_code = _GRPC_UNKNOWN  # type: ignore[assignment]
            entry.status.error_message = item.reason
    return response
