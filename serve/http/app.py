"""The REST port: one aiohttp application in the gRPC server's event loop, over the same data
plane (limits, batching, metrics). Every protocol module adds its routes (`ROUTES`).

    http = HttpServer(settings, dataplane)
    port = await http.start()     # settings.rest_port; 0 picks a free port
    await http.stop(grace=10)     # stop listening, let in-flight requests finish

Errors are answered `{"error": "..."}` (the body TF Serving and Triton both use) with the HTTP
status of the error's canonical name (`serve.errors.status_name`, the one error table; below
only its HTTP codes). A body over `max_message_mb` is 413; no traceback ever reaches a client.
TLS and bearer tokens come from the same settings as the gRPC port's (`serve.http.auth`).
aiohttp rather than starlette + uvicorn: it embeds in a running loop (AppRunner, no signal
handlers of its own) and measured faster on loopback (docs/http.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from serve.dataplane import DataPlane
from serve.errors import InvalidInput, public_message, status_name
from serve.http.auth import bearer, ssl_context
from serve.security import Security
from serve.settings import Settings

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PLANE = web.AppKey("dataplane", DataPlane)
SERVER: web.AppKey[HttpServer] = web.AppKey("server")

# Canonical status name -> HTTP status (RESOURCE_EXHAUSTED: a full queue, retry later).
HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors -> their HTTP status; aiohttp's own (404 route, 405, 413) -> JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # pragma: no cover - no route here raises a 2xx/3xx HTTPException
            raise
        if exc.status == 413:
            limit = request.app[SERVER].settings.max_message_mb
            return error_response(413, f"request body over the limit of {limit:g} MiB")
        text = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else ""
        return error_response(exc.status, text or f"{exc.reason}: {request.method} {request.path}")
    except Exception as exc:
        code = status_name(exc)
        if code == "INTERNAL":
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
        return error_response(HTTP_STATUS.get(code, 500), public_message(exc))


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (413 over the size limit, 400 if it does not parse)."""
    return parse_json(await request.read())


def parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from exc


def decode_b64(item: Any, where: str) -> bytes:
    """`"<base64>"` or `{"b64": "<base64>"}` -> bytes (binary data inside JSON)."""
    text = item.get("b64") if isinstance(item, dict) and len(item) == 1 else item
    if not isinstance(text, str):
        expected = 'a base64 string or {"b64": ...}'
        raise InvalidInput(f"{where}: expected {expected}, not {item!r:.60}")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise InvalidInput(f"{where}: not valid base64 ({exc})") from exc


def plane(request: web.Request) -> DataPlane:
    return request.app[PLANE]


def routes() -> list[Callable[[web.Application], None]]:
    """Each protocol's `add_routes(app)`; TF Serving's module imports TensorFlow, only here."""
    from serve.http import kserve, tfserving, upload

    return [kserve.add_routes, upload.add_routes, tfserving.add_routes]


class HttpServer:
    """The aiohttp runner and its listening site on `settings.host:settings.rest_port`."""

    def __init__(
        self, settings: Settings, dataplane: DataPlane, security: Security | None = None
    ) -> None:
        self.settings = settings
        self.stopping = False
        security = security or Security.from_settings(settings)  # ConfigError: refuse to start
        middlewares: list[Middleware] = [errors]
        if security.tokens is not None:
            failed = dataplane.metrics.auth_failed
            health = security.auth_health
            middlewares.append(bearer(security.tokens, health=health, on_failure=failed))
        self._ssl = ssl_context(security.tls)
        self.app = web.Application(
            client_max_size=settings.max_message_bytes, middlewares=middlewares
        )
        self.app[PLANE] = dataplane
        self.app[SERVER] = self
        for add_routes in routes():
            add_routes(self.app)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Listen; returns the bound port."""
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=self.settings.grace
        )
        await runner.setup()
        port = self.settings.rest_port or 0
        shared = self.settings.reuse_port or self.settings.workers > 1  # --workers: one port
        site = web.TCPSite(
            runner, self.settings.host, port, ssl_context=self._ssl, reuse_port=shared or None
        )
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Report not ready, stop listening, give in-flight requests the grace period."""
        self.stopping = True
        if self._runner is not None:  # pragma: no branch - App.stop runs once, after start
            await self._runner.cleanup()
            self._runner = None
