"""The server's one typed settings object, filled from defaults < `CLFSERVE_*` env vars < CLI flags.

    settings = Settings.from_args(["--repository", "trained", "--port", "0"])
    CLFSERVE_MAX_BATCH_SIZE=64 clfserve --repository trained

Every field is both a flag (`max_batch_size` -> `--max-batch-size`) and an environment variable
(`CLFSERVE_MAX_BATCH_SIZE`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of each model to serve, as TensorFlow Serving's `model_version_policy`.

    "latest:N" (the N newest loadable versions, and the default version if it is older: see
    `serve.version_labels`), "all", or "specific:1,3".
    """

    kind: Literal["latest", "all", "specific"] = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        kind, _, rest = text.strip().partition(":")
        try:
            if kind == "latest":
                count = int(rest) if rest else 1
                if count < 1:
                    raise ValueError("latest:N needs N >= 1")
                return cls("latest", count=count)
            if kind == "all" and not rest:
                return cls("all")
            if kind == "specific" and rest:
                return cls("specific", versions=tuple(sorted(int(v) for v in rest.split(","))))
        except ValueError as exc:
            raise ValueError(f"bad version policy {text!r}: {exc}") from exc
        raise ValueError(f"version policy must be latest[:N], all or specific:V1,V2; not {text!r}")

    def select(self, candidates: Sequence[int], default: int | None = None) -> list[int]:
        """The versions to serve among loadable `candidates` (any order), newest first;
        `default`: the default version among them, kept by "latest:N" however old."""
        newest_first = sorted(candidates, reverse=True)
        if self.kind == "latest":
            kept = newest_first[: self.count]
            return kept if default is None or default in kept else [*kept, default]
        if self.kind == "specific":
            return [v for v in newest_first if v in self.versions]
        return newest_first

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "all"


class Settings(BaseSettings):
    """clfserve configuration (see the README's serve section for the meaning of each knob)."""

    model_config = SettingsConfigDict(env_prefix="CLFSERVE_", extra="forbid")

    repository: Path = Field(Path("trained"), description="model repository root")
    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(8500, ge=0, le=65535, description="gRPC port (0 picks a free one)")
    port_file: Path | None = Field(None, description="write the bound gRPC port to this file")
    rest_port: int | None = Field(
        None, ge=0, le=65535, description="HTTP/REST port (0 picks a free one; unset: no REST)"
    )
    rest_port_file: Path | None = Field(None, description="write the bound REST port to this file")
    max_batch_size: int = Field(32, ge=1, description="most images in one model call")
    batch_timeout_ms: float = Field(
        2.0, ge=0, description="longest wait for more requests that are already arriving"
    )
    queue_bound: int = Field(
        256, ge=1, description="queued requests per version before RESOURCE_EXHAUSTED"
    )
    version_policy: str = Field("latest:1", description="latest[:N] | all | specific:V1,V2")
    poll_interval: float = Field(
        5.0, gt=0, description="seconds between repository rescans (watchdog fallback)"
    )
    watch: bool = Field(True, description="watch the repository with watchdog")
    max_message_mb: float = Field(16.0, gt=0, description="largest request message, in MiB")
    max_images: int = Field(256, ge=1, description="most inputs in one request")
    decode_threads: int = Field(2, ge=1, description="threads decoding and resizing images")
    runtime: Literal["auto", "tensorflow", "litert"] = Field(
        "auto", description="inference runtime: auto (LiteRT where faster) | tensorflow | litert"
    )
    max_pixels: int = Field(40_000_000, ge=1, description="largest decoded image, in pixels")
    metrics_port: int | None = Field(
        8502, ge=0, le=65535, description="Prometheus port (0 picks one; unset disables)"
    )
    workers: int = Field(
        1, ge=1, description="server processes sharing the port (SO_REUSEPORT), own batchers each"
    )
    reuse_port: bool = Field(
        False, description="let other processes bind the same port (set for --workers)"
    )
    grace: float = Field(10.0, ge=0, description="seconds in-flight requests get at shutdown")
    log_format: Literal["text", "json"] = Field("text", description="log line format")
    log_level: str = Field("INFO", description="logging level")
    # Security (docs/security.md): TLS when a certificate is given, tokens when any is given.
    tls_cert: Path | None = Field(None, description="server certificate chain (PEM): TLS")
    tls_key: Path | None = Field(None, description="server private key (PEM), with --tls-cert")
    tls_client_ca: Path | None = Field(
        None, description="CA (PEM) that must sign client certificates: mutual TLS"
    )
    auth_token_file: Path | None = Field(
        None, description="bearer tokens, one `token` or `name:token` a line"
    )
    auth_tokens: SecretStr | None = Field(
        None, description="comma-separated tokens (prefer CLFSERVE_AUTH_TOKENS to the flag)"
    )
    auth_health: bool = Field(False, description="require a token for health and reflection too")

    @field_validator("version_policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        VersionPolicy.parse(value)
        return value

    @property
    def policy(self) -> VersionPolicy:
        return VersionPolicy.parse(self.version_policy)

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> Settings:
        """Parse CLI flags; a flag given wins over its environment variable and the default."""
        parser = argparse.ArgumentParser(
            prog="clfserve", description="gRPC image classification server"
        )
        for name, info in cls.model_fields.items():
            flag = "--" + name.replace("_", "-")
            if info.annotation is bool:
                parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction)
            else:
                parser.add_argument(flag, dest=name, help=info.description, metavar="VALUE")
        given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
        if given.get("metrics_port") in ("", "none", "off"):
            given["metrics_port"] = None
        try:
            return cls(**given)
        except ValidationError as exc:  # a bad value, from a flag or a CLFSERVE_* variable
            problems = "; ".join(
                f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                for e in exc.errors()
            )
            parser.error(problems)  # usage line + "clfserve: error: ...", exit 2
