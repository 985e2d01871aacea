"""TensorFlow Serving's gRPC API over the data plane: PredictionService and ModelService.

Uses the generated code the `tensorflow-serving-api` package ships (importing it imports
TensorFlow, which the server loads anyway). Each method converts (`tfserving_convert`), awaits the
data plane, converts back; errors become status codes through `serve.grpc.status`, except that an
unknown version label is INVALID_ARGUMENT, as TensorFlow Serving answers it.

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("host:8500"))
    stub.Predict(request)  # request.model_spec.name = "mnist"; request.inputs["images"] = ...

Classify, Regress, MultiInference (tf.Example inputs) and HandleReloadConfigRequest answer
UNIMPLEMENTED: clfserve's models and their versions come from the repository, not a config.
"""

from __future__ import annotations

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from serve.dataplane import ClassifyRequest, DataPlane
from serve.grpc import tfserving_convert as convert
from serve.grpc.status import grpc_errors, plane_timeout
from serve.grpc.tfserving_status import status_response
from serve.manifest import Manifest

_labels_are_arguments = convert.labels_are_arguments  # shared with the REST API


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._plane = dataplane

    @grpc_errors
    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        version, label = convert.version_choice(spec)

        def build(manifest: Manifest) -> ClassifyRequest:
            return convert.classify_request_from_predict(request, manifest.signature)

        with _labels_are_arguments(label):
            result = await self._plane.infer(
                spec.name, version, label, build, plane_timeout(context)
            )
        assert result.manifest is not None
        return convert.predict_response(result, result.manifest.signature)

    @grpc_errors
    async def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        spec = request.model_spec
        version, label = convert.version_choice(spec)
        with _labels_are_arguments(label):
            number, manifest = self._plane.describe(spec.name, version, label)
        convert.check_signature(spec, manifest.signature)
        return convert.metadata_response(spec.name, number, manifest, list(request.metadata_field))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._plane = dataplane

    @grpc_errors
    async def GetModelStatus(
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        version, label = convert.version_choice(request.model_spec)
        with _labels_are_arguments(label):
            info = self._plane.get_model(request.model_spec.name)
            return status_response(info, version, label)


def register(server: grpc.aio.Server, dataplane: DataPlane) -> list[str]:
    """Add both services to `server`; returns their full names (for reflection)."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(dataplane), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(dataplane), server)
    return [
        prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
        model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    ]
