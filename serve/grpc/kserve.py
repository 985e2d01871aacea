"""The Open Inference Protocol v2 (`inference.GRPCInferenceService`) over the data plane.

KServe, Triton and MLServer clients work unchanged, e.g. `tritonclient.grpc`:

    client = tritonclient.grpc.InferenceServerClient("localhost:8500")
    client.infer("mnist", [images], outputs=[InferRequestedOutput("probabilities")])

Each method converts (`kserve_convert`), awaits the data plane, converts back; errors become
status codes through `serve.grpc.status`. ModelStreamInfer answers each request in order on the
stream, a failed one with `error_message`, and the stream goes on.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import AsyncIterator

import grpc
from inference import grpc_service_pb2 as pb  # generated; serve/grpc/__init__ puts it on the path
from inference import grpc_service_pb2_grpc

from serve.dataplane import ClassifyRequest, DataPlane
from serve.errors import ServeError, public_message
from serve.grpc import kserve_convert as convert
from serve.grpc.kserve_metadata import metadata_response
from serve.grpc.status import code_for, grpc_errors, plane_timeout
from serve.manifest import Manifest

log = logging.getLogger(__name__)
SERVER_NAME = "clfserve"
EXTENSIONS = [convert.CLASSIFICATION]


def _server_version() -> str:
    try:
        return importlib.metadata.version(SERVER_NAME)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - needs clfserve uninstalled
        return "unknown"


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._plane = dataplane
        self._version = _server_version()

    @grpc_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @grpc_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready)

    @grpc_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self._plane.describe(request.name, *convert.version_choice(request.version))
        except ServeError:  # unknown, loading, failed or unloading: not ready
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @grpc_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=self._version, extensions=EXTENSIONS
        )

    @grpc_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        _, manifest = self._plane.describe(request.name, *convert.version_choice(request.version))
        return metadata_response(self._plane.get_model(request.name), manifest)

    @grpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        return await self._infer(request, plane_timeout(context))

    async def _infer(
        self, request: pb.ModelInferRequest, timeout: float | None
    ) -> pb.ModelInferResponse:
        replies: list[convert.Reply] = []

        def build(manifest: Manifest) -> ClassifyRequest:
            domain, reply = convert.classify_request_from_infer(request, manifest.signature)
            replies.append(reply)
            return domain

        version, label = convert.version_choice(request.model_version)
        result = await self._plane.infer(request.model_name, version, label, build, timeout)
        assert result.manifest is not None
        return convert.infer_response(result, replies[0], result.manifest.signature, request.id)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in request_iterator:
            try:
                response = await self._infer(request, None)
            except Exception as exc:
                code = code_for(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.error("stream request failed", exc_info=exc)
                text = public_message(exc)
                yield pb.ModelStreamInferResponse(error_message=f"{code.name}: {text}")
            else:
                yield pb.ModelStreamInferResponse(infer_response=response)


def register(server: grpc.aio.Server, dataplane: DataPlane) -> list[str]:
    """Add the service to `server`; returns its full name (for reflection)."""
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(dataplane), server
    )
    return [pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name]
