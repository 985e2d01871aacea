"""Bearer tokens: the token list, a pure check any transport can use, and one gRPC interceptor.

    tokens = load_tokens(Path("tokens.txt"), os.environ.get("CLFSERVE_AUTH_TOKENS"))
    check_bearer("Bearer s3cret", tokens)  # None if accepted, else "missing"/"malformed"/"wrong"
    server = grpc.aio.server(interceptors=[BearerAuth(tokens, on_failure=count)])

Token lines are `token` or `name:token` (blank lines and `#` comments are skipped; the
variable takes the same entries separated by commas or newlines); the name
only labels the caller, it is never part of the secret. Comparison is constant-time
(`hmac.compare_digest` against every token, no early exit), and no token is ever logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import grpc

from serve.tls import ConfigError

log = logging.getLogger(__name__)
Reason = Literal["missing", "malformed", "wrong"]
REASONS: tuple[Reason, ...] = ("missing", "malformed", "wrong")
HEADER = "authorization"
# Kubernetes probes and grpcurl's discovery call these without a token unless --auth-health.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
EXPECTED = "this server requires the metadata 'authorization: Bearer <token>'"
MESSAGES: dict[Reason, str] = {
    "missing": f"{EXPECTED}; the call had no authorization metadata",
    "malformed": f"{EXPECTED}; the authorization metadata is not 'Bearer <token>'",
    "wrong": f"{EXPECTED}; the token given is not one this server accepts",
}


class Tokens:
    """The accepted tokens (bytes) and the caller names they stand for."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._pairs = [(token.encode(), name) for name, token in pairs]

    def __len__(self) -> int:
        return len(self._pairs)

    def match(self, presented: bytes) -> str | None:
        """The caller's name, or None; the time taken does not depend on which token matched."""
        found = None
        for token, name in self._pairs:
            if hmac.compare_digest(presented, token):
                found = name
        return found

    def __repr__(self) -> str:  # never the tokens themselves
        return f"Tokens({len(self)} tokens)"


def parse_tokens(text: str, source: str) -> list[tuple[str, str]]:
    """`token` / `name:token` lines -> (name, token) pairs (a name ends at the first colon)."""
    pairs: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, token = line.partition(":")
        name, token = (name, token.strip()) if colon else ("", name)
        if not token or any(c.isspace() for c in token) or not token.isprintable():
            raise ConfigError(f"{source}: entry {number} has an empty or unprintable token")
        pairs.append((name.strip() or f"token{len(pairs) + 1}", token))
    return pairs


def load_tokens(file: Path | None, env: str | None) -> Tokens | None:
    """The tokens of `--auth-token-file` and `CLFSERVE_AUTH_TOKENS`; None when neither is set.

    Raises ConfigError for an unreadable or empty file (a server meant to be closed must not
    start open)."""
    if file is None and env is None:
        return None
    pairs: list[tuple[str, str]] = []
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"cannot read the auth token file {file}: {reason}") from None
        pairs += parse_tokens(text, str(file))
        if not pairs:
            raise ConfigError(f"the auth token file {file} holds no token")
    if env is not None:
        pairs += parse_tokens(env.replace(",", "\n"), "CLFSERVE_AUTH_TOKENS")
    if not pairs:
        raise ConfigError("CLFSERVE_AUTH_TOKENS is set but holds no token")
    return Tokens(pairs)


def check_bearer(header: str | None, tokens: Tokens) -> Reason | None:
    """None when `header` (the authorization value) carries an accepted token, else why not."""
    if not header:
        return "missing"
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return "malformed"
    if tokens.match(token.encode("utf-8", "surrogateescape")) is None:
        return "wrong"
    return None


def _denier(reason: Reason) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGES[reason])

    return deny


def _deny_handler(handler: grpc.RpcMethodHandler | None, reason: Reason) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""
    deny = _denier(reason)
    streaming_in = handler is not None and handler.request_streaming
    streaming_out = handler is not None and handler.response_streaming
    if streaming_in and streaming_out:
        return grpc.stream_stream_rpc_method_handler(deny)
    if streaming_in:  # pragma: no cover - no method served here is stream-unary
        return grpc.stream_unary_rpc_method_handler(deny)
    if streaming_out:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class BearerAuth(grpc.aio.ServerInterceptor):
    """Every RPC needs an accepted bearer token, except health and reflection unless `health`.

    The accepted path costs one scan of the call's metadata and the token comparison; the
    refused path counts the reason through `on_failure`."""

    def __init__(
        self,
        tokens: Tokens,
        *,
        health: bool = False,
        on_failure: Callable[[Reason], None] | None = None,
    ) -> None:
        self._tokens = tokens
        self._open = () if health else OPEN_PREFIXES
        self._on_failure = on_failure

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if self._open and method.startswith(self._open):
            return await continuation(handler_call_details)
        header = None
        for key, value in handler_call_details.invocation_metadata or ():  # type: ignore[attr-defined]
            if key == HEADER:
                header = value
                break
        reason = check_bearer(header if isinstance(header, str) else None, self._tokens)
        if reason is None:
            return await continuation(handler_call_details)
        if self._on_failure is not None:  # pragma: no branch - Security.interceptors passes one
            self._on_failure(reason)
        log.debug("refused %s: %s token", method, reason)
        return _deny_handler(await continuation(handler_call_details), reason)
