"""The REST port's security, from the same settings as the gRPC port (`serve.security`):
bearer tokens (`Authorization: Bearer <token>`, checked by `serve.grpc.auth.check_bearer`) and
TLS (an `ssl.SSLContext` from the same PEM files; mutual TLS with `--tls-client-ca`).

    middlewares = [bearer(security.tokens, health=False, on_failure=metrics.auth_failed)]
    context = ssl_context(security.tls)  # None: plaintext

Health (`/v2/health/...`) stays open for probes unless `--auth-health`, as on the gRPC port.
A refusal is 401 `{"error": ...}` saying what is expected, with `WWW-Authenticate: Bearer`.
TLS files are read when the server starts (the gRPC port also reloads them when they change).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from serve.grpc.auth import Reason, Tokens, check_bearer
from serve.tls import ConfigError, TlsFiles, check, file_state

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PREFIXES = ("/v2/health/",)
EXPECTED = "this server requires the header 'Authorization: Bearer <token>'"
MESSAGES: dict[Reason, str] = {
    "missing": f"{EXPECTED}; the request had no Authorization header",
    "malformed": f"{EXPECTED}; the Authorization header is not 'Bearer <token>'",
    "wrong": f"{EXPECTED}; the token given is not one this server accepts",
}


def bearer(tokens: Tokens, *, health: bool, on_failure: Callable[[Reason], None]) -> Middleware:
    """A middleware refusing requests without an accepted token (health too if `health`)."""
    open_prefixes = () if health else OPEN_PREFIXES

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if open_prefixes and request.path.startswith(open_prefixes):
            return await handler(request)
        reason = check_bearer(request.headers.get("Authorization"), tokens)
        if reason is None:
            return await handler(request)
        on_failure(reason)
        challenge = {"WWW-Authenticate": 'Bearer realm="clfserve"'}
        return web.json_response({"error": MESSAGES[reason]}, status=401, headers=challenge)

    return check


def _context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    if files.client_ca is not None:
        context.load_verify_locations(cafile=files.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def ssl_context(files: TlsFiles | None) -> ssl.SSLContext | None:
    """The server side of TLS for aiohttp, or None for plaintext.

    Rotated files are used from the next handshake on, as on the gRPC port: at every Client
    Hello the files' state is compared (a few stat calls) and, once changed and valid again,
    the handshake switches to a context built from them.
    """
    if files is None:
        return None
    current = {"state": file_state(files), "context": _context(files)}

    def pick(connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        try:
            state = file_state(files)
            if state != current["state"]:
                check(files)
                current["state"], current["context"] = state, _context(files)
                log.info("TLS certificate reloaded for the REST port from %s", files.cert)
        except (OSError, ConfigError, ssl.SSLError) as exc:
            log.warning("TLS files changed but cannot be used yet; keeping the old: %s", exc)
        connection.context = current["context"]  # type: ignore[assignment]

    front = _context(files)
    front.sni_callback = pick  # called for every Client Hello, with or without SNI
    return front
