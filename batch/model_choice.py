"""The settings `clfbatch run` and `clfbatch watch` share: which model, in which repository or on
which server (with its TLS and token), and on which local runtime. Declared once here; each
command's settings class adds its own fields (see batch.options for how fields become flags).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from batch.backends import DEFAULT_REPOSITORY, Runtime, ServerAccess
from batch.options import Opt


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    model: Annotated[str, Opt("Model name in the repository.", ("--model", "-m"))]
    repository: Annotated[Path, Opt("Model repository.")] = DEFAULT_REPOSITORY
    server: Annotated[
        str | None, Opt("HOST:PORT of a clfserve; replicas: H:P,H:P or dns:///NAME:PORT.")
    ] = None
    tls_ca: Annotated[Path | None, Opt("With --server: TLS, trusting this CA (PEM).")] = None
    tls_cert: Annotated[Path | None, Opt("With --server: client certificate (PEM), mTLS.")] = None
    tls_key: Annotated[Path | None, Opt("With --server: the client certificate's key.")] = None
    token: Annotated[str | None, Opt("With --server: bearer token (prefer CLFBATCH_TOKEN).")] = (
        field(default=None, repr=False)
    )
    runtime: Annotated[Runtime, Opt("Local model runtime (docs/runtime.md).")] = Runtime.auto

    @property
    def access(self) -> ServerAccess:
        return ServerAccess(self.tls_ca, self.tls_cert, self.tls_key, self.token)
