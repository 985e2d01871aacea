"""Domain errors. Transports map them to their own status codes in one place.

ServeError
├── ModelNotFound          no model of that name
├── VersionNotFound        the model exists, the version or label does not
├── ModelNotReady          the version exists but is not available (loading, failed)
├── InvalidInput           a request's input is malformed; names the input index
├── ResourceExhausted      a queue or size limit was reached
├── ManifestError          a version directory's manifest is missing or malformed
├── ServerUnavailable      (client side) the server is unreachable, not ready, or too slow
└── Unauthenticated        the call's bearer token is missing or wrong (docs/security.md)
"""

from __future__ import annotations

import asyncio


class ServeError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelNotFound(ServeError):
    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; known models: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"model {name!r} not found{hint}")
        self.name = name


class VersionNotFound(ServeError):
    def __init__(self, name: str, version: int | str, known: list[int] | None = None) -> None:
        hint = f"; available versions: {', '.join(map(str, sorted(known)))}" if known else ""
        super().__init__(f"model {name!r} has no version {version!r}{hint}")
        self.name = name
        self.version = version


class ModelNotReady(ServeError):
    """The version is known but cannot answer now (still loading, or failed)."""


class InvalidInput(ServeError):
    def __init__(self, message: str, index: int | None = None) -> None:
        prefix = f"input {index}: " if index is not None else ""
        super().__init__(prefix + message)
        self.index = index


class ResourceExhausted(ServeError):
    """A bounded resource (queue, message size, image count) is full or exceeded."""


class ManifestError(ServeError):
    """A manifest.json is missing, unreadable or does not follow the schema."""


class ServerUnavailable(ServeError):
    """The server cannot be reached, is not ready, or did not answer within the deadline."""


class Unauthenticated(ServeError):
    """The server refused the call's credentials (no token, or one it does not accept)."""


# Canonical status names (gRPC's, which HTTP maps from too); the first matching class wins, so a
# subclass of a listed error is answered like its parent. Anything else is INTERNAL.
STATUS_NAMES: tuple[tuple[type[BaseException], str], ...] = (
    (ModelNotFound, "NOT_FOUND"),
    (VersionNotFound, "NOT_FOUND"),
    (ModelNotReady, "UNAVAILABLE"),
    (InvalidInput, "INVALID_ARGUMENT"),
    (ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (Unauthenticated, "UNAUTHENTICATED"),
    (TimeoutError, "DEADLINE_EXCEEDED"),
    (asyncio.CancelledError, "CANCELLED"),
)


def status_name(exc: BaseException) -> str:
    """The canonical status a failed request is answered and counted with."""
    for kind, name in STATUS_NAMES:
        if isinstance(exc, kind):
            return name
    return "INTERNAL"


def public_message(exc: BaseException) -> str:
    """What a caller is told: the error's own text, or (INTERNAL) no internals at all."""
    if status_name(exc) == "INTERNAL":
        return f"internal error ({type(exc).__name__}); see the server log"
    return str(exc) or status_name(exc)
