"""Build the gRPC server: every protocol in `PROTOCOLS`, health and reflection, on one port.

A protocol module exposes `register(server, dataplane) -> list[str]` (the full service names it
added, for reflection); to serve another API over the same data plane, append it to `PROTOCOLS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import OVERALL_HEALTH
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from serve.dataplane import DataPlane
from serve.grpc import clf_servicer, kserve
from serve.security import Security
from serve.settings import Settings

log = logging.getLogger(__name__)
Register = Callable[[grpc.aio.Server, DataPlane], list[str]]


def _tfserving(server: grpc.aio.Server, dataplane: DataPlane) -> list[str]:
    from serve.grpc import tfserving  # imports TensorFlow: only when a server is built

    return tfserving.register(server, dataplane)


PROTOCOLS: list[Register] = [clf_servicer.register, _tfserving, kserve.register]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcServer:
    """The grpc.aio server and its health: overall, plus one service name per model."""

    def __init__(
        self, settings: Settings, dataplane: DataPlane, protocols: Sequence[Register] = PROTOCOLS
    ) -> None:
        self._plane = dataplane
        limit = settings.max_message_bytes
        self.security = Security.from_settings(settings)  # ConfigError: refuse to start
        self.server = grpc.aio.server(
            interceptors=self.security.interceptors(dataplane.metrics),
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", int(settings.reuse_port or settings.workers > 1)),
            ],
        )
        names: list[str] = []
        for register in protocols:
            names += register(self.server, dataplane)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = [*names, HEALTH_SERVICE, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(self.service_names, self.server)
        self.port, self.tls = self.security.bind(self.server, f"{settings.host}:{settings.port}")
        self._models_with_health: set[str] = set()
        self._stopping = False

    async def start(self) -> None:
        await self.health.set(OVERALL_HEALTH, NOT_SERVING)
        await self.server.start()

    async def update_health(self) -> None:
        """Overall SERVING once the first load finished; a model SERVING while it has a version."""
        if self._stopping:
            return
        available = set(self._plane.registry.available_names())
        for name in self._models_with_health | set(self._plane.registry.names()):
            await self.health.set(name, SERVING if name in available else NOT_SERVING)
            self._models_with_health.add(name)
        await self.health.set(OVERALL_HEALTH, SERVING if self._plane.ready else NOT_SERVING)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, and give in-flight calls `grace` seconds."""
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
