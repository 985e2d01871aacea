"""Where a batch goes to be classified: a model loaded in-process, or a running clfserve.

Both backends take tensors already preprocessed by `serve.preprocess` on this side, so a file
gets the same probabilities whichever way it is classified.

    backend = open_backend("cifar10", repository=Path("trained"))          # in-process
    backend = open_backend("cifar10", server="127.0.0.1:8500")             # through clfserve
    probs = backend.classify(batch)  # float32 [N, H, W, C] -> float32 [N, len(backend.labels)]
    backend.close()
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from batch.errors import BatchError
from serve.errors import (
    ModelNotFound,
    ModelNotReady,
    ServeError,
    ServerUnavailable,
    Unauthenticated,
    VersionNotFound,
)
from serve.manifest import Preprocessing
from serve.repository import ModelVersion, resolve

DEFAULT_REPOSITORY = Path("trained")
CONNECT_TIMEOUT = 5.0
_MAX_IMAGES = 128  # clfserve accepts 256 inputs per request by default
_MAX_REQUEST_BYTES = 8 * 1024 * 1024  # and 16 MiB messages


class Runtime(enum.StrEnum):
    """Where a local model runs (`serve.runtime`): LiteRT where it is faster, or one of them."""

    auto = "auto"
    tensorflow = "tensorflow"
    litert = "litert"


class Backend(Protocol):
    """A model version that classifies preprocessed batches."""

    model: str
    version: int
    labels: tuple[str, ...]
    preprocessing: Preprocessing

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed float32 NHWC -> probabilities float32 [N, len(labels)]."""
        ...

    def close(self) -> None:
        """Release the model or the connection. Safe to call twice."""
        ...


class LocalBackend:
    """A repository version loaded into this process (`serve.loader`), called via its signature."""

    def __init__(self, version: ModelVersion, runtime: str = Runtime.auto) -> None:
        from serve.loader import load  # imports TensorFlow: only when a local model is wanted

        self.model = version.name
        self.version = version.version
        self.labels = version.manifest.classes
        self.preprocessing = version.manifest.preprocessing
        self.manifest = version.manifest
        self._classifier: Any = load(version, runtime=str(runtime))

    def classify(self, batch: np.ndarray) -> np.ndarray:
        if self._classifier is None:  # pragma: no cover - no caller classifies after close()
            raise RuntimeError("backend is closed")
        return self._classifier.predict(batch)

    def close(self) -> None:
        self._classifier = None


@dataclass(frozen=True)
class ServerAccess:
    """How to reach a clfserve that wants TLS, a client certificate or a token (docs/security.md).

    `check()` raises BatchError (exit 2) for half a key pair or an unreadable file."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = field(default=None, repr=False)

    def check(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BatchError("--tls-cert and --tls-key go together: give both or neither")
        for flag, path in (("--tls-ca", self.tls_ca), ("--tls-cert", self.tls_cert),
                           ("--tls-key", self.tls_key)):  # fmt: skip
            if path is not None and not path.is_file():
                raise BatchError(f"{flag} {path} is not a readable file")

    def hint(self) -> str:
        """What to try when the server cannot be reached with these settings."""
        if self.tls_ca is None and self.tls_cert is None:
            return " (if the server uses TLS, pass --tls-ca)"
        return " (is --tls-ca the CA of the server's certificate, and does the server use TLS?)"


class RemoteBackend:
    """A model served by clfserve, reached through `serve.client.Client`.

    Raises `serve.errors.ServerUnavailable` when the server does not answer within
    `connect_timeout`, and ModelNotFound / VersionNotFound (listing what exists) for bad names.
    """

    def __init__(
        self,
        target: str,
        model: str,
        version: int | None = None,
        *,
        label: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = 60.0,
        access: ServerAccess | None = None,
    ) -> None:
        from serve.client import Client

        access = access or ServerAccess()
        access.check()
        try:  # several replicas, HOST:PORT,HOST:PORT or dns:///NAME:PORT, are balanced over
            self._client: Any = Client(
                target,
                timeout=timeout,
                tls_ca=access.tls_ca,
                tls_cert=access.tls_cert,
                tls_key=access.tls_key,
                token=access.token,
            )
        except ValueError as exc:  # a replica list naming no port, or a name that won't resolve
            raise BatchError(f"--server {target}: {exc}") from None
        try:
            try:
                self._client.wait_ready(connect_timeout)
                info = self._client.get_model(model)
            except ServerUnavailable as exc:
                raise ServerUnavailable(f"{exc}{access.hint()}") from None
            except Unauthenticated as exc:
                raise Unauthenticated(f"{exc} (pass --token or set CLFBATCH_TOKEN)") from None
            chosen = _pick_version(model, version, label, info)
            if chosen.preprocessing is None:  # pragma: no cover - clfserve always sends it
                raise ModelNotReady(f"the server did not describe {model} v{chosen.version}")
            self.model = model
            self.version = int(chosen.version)
            self.labels = tuple(chosen.classes)
            self.preprocessing: Preprocessing = chosen.preprocessing
        except BaseException:
            self._client.close()
            raise

    def classify(self, batch: np.ndarray) -> np.ndarray:
        # Requests stay well under the server's message and image-count limits.
        per_request = max(1, min(_MAX_IMAGES, _MAX_REQUEST_BYTES // max(1, batch[0:1].nbytes)))
        parts = [
            self._request(batch[start : start + per_request])
            for start in range(0, len(batch), per_request)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def _request(self, batch: np.ndarray) -> np.ndarray:
        result = self._client.classify(
            self.model, list(batch), version=self.version, top_k=1, preprocessed=True
        )
        order = [result.labels.index(label) for label in self.labels]
        probs = np.asarray([p.probabilities for p in result.predictions], dtype=np.float32)
        return probs[:, order]

    def close(self) -> None:
        self._client.close()


def _pick_version(model: str, wanted: int | None, label: str | None, info: Any) -> Any:
    """The served version's info: `wanted`, else the one the server says `label` points at,
    else the server's default version. The run then pins that number."""
    versions = {int(v.version): v for v in info.versions}
    if wanted is None and label:
        named = [n for n, v in versions.items() if label in v.labels]
        if not named:
            raise VersionNotFound(model, label, sorted(versions))
        wanted = named[0]
    number = wanted if wanted is not None else info.default_version
    if number is None and versions:
        number = max(versions)
    if number is None or number not in versions:
        raise VersionNotFound(model, "stable" if number is None else number, sorted(versions))
    chosen = versions[number]
    state = getattr(chosen.state, "value", chosen.state)
    if state != "available":
        reason = f": {chosen.reason}" if chosen.reason else ""
        raise ModelNotReady(f"model {model!r} version {number} is {state} on the server{reason}")
    return chosen


def open_backend(
    model: str,
    *,
    version: int | None = None,
    label: str | None = None,
    repository: Path = DEFAULT_REPOSITORY,
    server: str | None = None,
    runtime: str = Runtime.auto,
    access: ServerAccess | None = None,
) -> Backend:
    """The in-process model (default) or, with `server="host:port"`, the served one: `version`,
    else the one version `label` names, else the default one (serve.version_labels).

    Raises ModelNotFound / VersionNotFound whose messages list what exists.
    """
    if server:
        return RemoteBackend(server, model, version, label=label, access=access)
    return LocalBackend(resolve(Path(repository), model, version, label), runtime)


__all__ = [
    "Backend",
    "LocalBackend",
    "ModelNotFound",
    "RemoteBackend",
    "Runtime",
    "ServeError",
    "ServerAccess",
    "VersionNotFound",
    "open_backend",
]
