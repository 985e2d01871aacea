"""serve.grpc.auth: what the token list shows of itself, a token variable with no token, and
the refusal of a server-streaming call (health Watch) under --auth-health."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from serve.grpc.auth import MESSAGES
from serve.security import ConfigError, Security
from tests.serve.conftest import ServerThread, make_settings

TOKENS = SecretStr("alice:s3cret, bob:0ther")


def test_repr_counts_the_tokens_and_shows_none(tmp_path: Path) -> None:
    security = Security.from_settings(make_settings(tmp_path, auth_tokens=TOKENS))
    assert repr(security.tokens) == "Tokens(2 tokens)"
    assert "Tokens(2 tokens)" in repr(security)  # the dataclass repr a log line might print
    assert "s3cret" not in repr(security) and "0ther" not in repr(security)


@pytest.mark.parametrize("value", ["", " , ", "\n"])
def test_token_variable_without_a_token_refuses_to_start(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="CLFSERVE_AUTH_TOKENS is set but holds no token"):
        Security.from_settings(make_settings(tmp_path, auth_tokens=SecretStr(value)))


def test_auth_health_refuses_the_health_watch_stream(
    model_repository: Path, start_server: Callable[..., ServerThread]
) -> None:
    server = start_server(model_repository, auth_tokens=TOKENS, auth_health=True)
    request = health_pb2.HealthCheckRequest()
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        refused = health.Watch(request, timeout=30)
        with pytest.raises(grpc.RpcError) as caught:
            next(refused)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.details() == MESSAGES["missing"]
        token = (("authorization", "Bearer s3cret"),)
        accepted = health.Watch(request, timeout=30, metadata=token)
        try:
            first = next(accepted)  # the current status, sent at once
        finally:
            accepted.cancel()
    assert first.status in (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
