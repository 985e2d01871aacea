"""Settings -> what secures the server's port: TLS files and bearer tokens (docs/security.md).

    security = Security.from_settings(settings)    # raises ConfigError: refuse to start
    port = security.bind(server, "0.0.0.0:8500", metrics)

Checked before anything starts, so a server meant to be closed never starts open.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from serve.grpc.auth import BearerAuth, Tokens, load_tokens
from serve.metrics import ServeMetrics
from serve.settings import Settings
from serve.tls import ConfigError, Reloader, TlsFiles, check, server_credentials

__all__ = ["ConfigError", "Security"]


@dataclass(frozen=True)
class Security:
    tls: TlsFiles | None
    tokens: Tokens | None
    auth_health: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Security:
        """Read and check every file now; raises ConfigError with what to fix."""
        s = settings
        if (s.tls_cert is None) != (s.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        if s.tls_client_ca is not None and s.tls_cert is None:
            raise ConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        tls = None
        if s.tls_cert is not None and s.tls_key is not None:
            tls = TlsFiles(s.tls_cert, s.tls_key, s.tls_client_ca)
            check(tls)
        env = s.auth_tokens.get_secret_value() if s.auth_tokens is not None else None
        tokens = load_tokens(s.auth_token_file, env)
        if s.auth_health and tokens is None:
            raise ConfigError(
                "--auth-health needs tokens (--auth-token-file or CLFSERVE_AUTH_TOKENS)"
            )
        return cls(tls, tokens, s.auth_health)

    def describe(self) -> str:
        """One line for the log: what is on (never a token)."""
        if self.tls is None:
            tls = "plaintext"
        else:
            tls = "mutual TLS" if self.tls.client_ca is not None else "TLS"
        if self.tokens is None:
            return f"{tls}, no bearer tokens"
        scope = "every call" if self.auth_health else "every call but health and reflection"
        count = f"{len(self.tokens)} bearer token{'s' if len(self.tokens) != 1 else ''}"
        return f"{tls}, {count} required on {scope}"

    def interceptors(self, metrics: ServeMetrics) -> list[grpc.aio.ServerInterceptor]:
        """The bearer-token check, or nothing at all when no token is configured."""
        if self.tokens is None:
            return []
        return [BearerAuth(self.tokens, health=self.auth_health, on_failure=metrics.auth_failed)]

    def bind(self, server: grpc.aio.Server, address: str) -> tuple[int, Reloader | None]:
        """Add the listening port, with TLS when configured; returns it and the TLS reloader.

        Raises ConfigError when the address cannot be bound (taken, or not this machine's).
        """
        try:
            if self.tls is None:
                return server.add_insecure_port(address), None
            credentials, reloader = server_credentials(self.tls)
            return server.add_secure_port(address, credentials), reloader
        except RuntimeError as exc:  # grpc's "Failed to bind to address ..."
            raise ConfigError(
                f"cannot listen on {address}: the port is taken or the host is not this "
                "machine's (servers sharing a port all need --reuse-port)"
            ) from exc
