"""Domain errors <-> gRPC status codes for every servicer and for the client.

The one table of which error is which status is `serve.errors.STATUS_NAMES` (canonical names,
which are gRPC's); here it only becomes `grpc.StatusCode`. Server side, every servicer method is
wrapped in `@grpc_errors`: a `ServeError` (or a deadline) becomes its status code with the
error's message; the error type and, for an invalid input, its index travel in the trailing
metadata (`clf-error`, `clf-input-index`) so clients rebuild the exact exception; anything
unexpected is logged with its traceback and answered `INTERNAL` without one (never `UNKNOWN`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import grpc
from grpc.aio import AbortError

from serve.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ResourceExhausted,
    ServeError,
    ServerUnavailable,
    Unauthenticated,
    VersionNotFound,
    public_message,
    status_name,
)

log = logging.getLogger(__name__)
ERROR_KEY = "clf-error"
INDEX_KEY = "clf-input-index"
P = ParamSpec("P")
R = TypeVar("R")


def plane_timeout(context: grpc.aio.ServicerContext) -> float | None:
    """The `timeout` a gRPC call hands the data plane: 0 when its deadline has already passed
    (answered DEADLINE_EXCEEDED before any work), else None. gRPC itself cancels a call at its
    deadline (the handler's task gets CancelledError and a request still queued in a batcher is
    dropped), so a timer of the plane's own would only repeat that, at about 30 us a request."""
    left = context.time_remaining()
    return 0.0 if left is not None and left <= 0 else None


def code_for(exc: BaseException) -> grpc.StatusCode:
    """The status code a failed request is answered with."""
    return grpc.StatusCode[status_name(exc)]


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    code = code_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error", exc_info=exc)
    metadata = [(ERROR_KEY, type(exc).__name__)]
    if isinstance(exc, InvalidInput) and exc.index is not None:
        metadata.append((INDEX_KEY, str(exc.index)))
    context.set_trailing_metadata(tuple(metadata))
    await context.abort(code, public_message(exc))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover - abort() raises


def grpc_errors(
    method: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Wrap a unary servicer method `(self, request, context)`: errors become statuses."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except AbortError:  # pragma: no cover - no @grpc_errors method calls context.abort itself
            raise
        except Exception as exc:
            await abort(args[-1], exc)  # type: ignore[arg-type]

    return wrapper


# -- client side -----------------------------------------------------------------------------
def error_from_rpc(error: grpc.RpcError, model: str = "", version: Any = None) -> ServeError:
    """A failed call's status -> the domain exception the server raised (or ServerUnavailable)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(code)
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    kind = dict(trailing or ()).get(ERROR_KEY, "")
    exc: ServeError
    if code is grpc.StatusCode.NOT_FOUND:
        exc = VersionNotFound(model, version) if kind == "VersionNotFound" else ModelNotFound(model)
    elif code is grpc.StatusCode.INVALID_ARGUMENT:
        index = dict(trailing or ()).get(INDEX_KEY)
        exc = InvalidInput(details, int(index) if index is not None else None)
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        exc = ResourceExhausted(details)
    elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        exc = Unauthenticated(details)
    elif code is grpc.StatusCode.UNAVAILABLE and kind == "ModelNotReady":
        exc = ModelNotReady(details)
    elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        exc = ServerUnavailable(f"{code.name}: {details}")
    else:
        exc = ServeError(f"{code.name}: {details}")
    exc.args = (details,) if not isinstance(exc, ServerUnavailable) else exc.args
    return exc
