"""The clf.v1 ClassificationService: each method converts, awaits the data plane, converts back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from serve.dataplane import DataPlane
from serve.errors import public_message
from serve.grpc import clf_pb2 as pb
from serve.grpc import clf_pb2_grpc, convert
from serve.grpc.status import code_for, grpc_errors, plane_timeout

STREAM_WINDOW = 32  # stream requests classified concurrently; answers keep request order


class ClassificationServicer(clf_pb2_grpc.ClassificationServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._plane = dataplane

    @grpc_errors
    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        domain = convert.classify_request_from_proto(request)
        result = await self._plane.classify(domain, timeout=plane_timeout(context))
        return convert.classify_result_to_proto(result, request.request_id)

    @grpc_errors
    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        domain = convert.embed_request_from_proto(request)
        result = await self._plane.classify(domain, timeout=plane_timeout(context))
        return convert.embed_result_to_proto(result, request.request_id)

    @grpc_errors
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return convert.model_infos_to_proto(self._plane.list_models())

    @grpc_errors
    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        return convert.model_info_to_proto(self._plane.get_model(request.name))

    async def ClassifyStream(
        self,
        request_iterator: AsyncIterator[pb.ClassifyRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        """Answers in request order; a failed request gets an in-band error, the stream goes on."""
        window: asyncio.Queue[asyncio.Task[pb.ClassifyStreamResponse] | None] = asyncio.Queue(
            STREAM_WINDOW
        )

        async def feed() -> None:
            async for message in request_iterator:
                await window.put(asyncio.ensure_future(self._stream_one(message)))
            await window.put(None)

        feeder = asyncio.ensure_future(feed())
        try:
            while (task := await window.get()) is not None:
                yield await task
            await feeder
        finally:
            feeder.cancel()
            while not window.empty():
                leftover = window.get_nowait()
                if leftover is not None:
                    leftover.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder

    async def _stream_one(self, message: pb.ClassifyRequest) -> pb.ClassifyStreamResponse:
        try:
            result = await self._plane.classify(convert.classify_request_from_proto(message))
        except Exception as exc:
            code = code_for(exc)
            text = public_message(exc)
            return pb.ClassifyStreamResponse(
                error=pb.Status(code=code.value[0], message=text), request_id=message.request_id
            )
        return pb.ClassifyStreamResponse(
            response=convert.classify_result_to_proto(result, message.request_id),
            request_id=message.request_id,
        )


def register(server: grpc.aio.Server, dataplane: DataPlane) -> list[str]:
    """Add the service to `server`; returns its full service names (for reflection)."""
    clf_pb2_grpc.add_ClassificationServiceServicer_to_server(
        ClassificationServicer(dataplane), server
    )
    return [pb.DESCRIPTOR.services_by_name["ClassificationService"].full_name]
