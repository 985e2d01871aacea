"""TLS, mutual TLS, bearer tokens and certificate rotation on a real server (docs/security.md).

Certificates are made at test time (`tests.serve.security_certs`); each server is in-process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from serve.client import Client, build_request, result_from_response
from serve.errors import Unauthenticated
from serve.grpc import clf_pb2, clf_pb2_grpc
from serve.grpc.auth import MESSAGES, check_bearer, load_tokens, parse_tokens
from serve.metrics import ServeMetrics
from serve.security import ConfigError, Security
from serve.tls import Reloader, TlsFiles, check
from tests.conftest import REPO_ROOT
from tests.serve.conftest import ServerThread, flat_png, make_settings, metric, wait_for
from tests.serve.security_certs import Authority, Issued

TOKENS = SecretStr("alice:s3cret, bob:0ther")


@dataclass
class Pki:
    ca: Authority
    ca_file: Path
    server: Issued
    client: Issued
    stranger: Issued  # a client certificate from another CA


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, other = Authority("clfserve test CA"), Authority("another CA")
    return Pki(
        ca,
        ca.write(tmp_path / "ca.pem"),
        ca.issue("localhost", tmp_path / "server"),
        ca.issue("client", tmp_path / "client"),
        other.issue("client", tmp_path / "stranger"),
    )


def channel(
    server: ServerThread, root: bytes | None = None, pair: Issued | None = None
) -> grpc.Channel:
    target = f"localhost:{server.port}"
    if root is None:
        return grpc.insecure_channel(target)
    key, chain = (pair.key.read_bytes(), pair.cert.read_bytes()) if pair else (None, None)
    credentials = grpc.ssl_channel_credentials(root, key, chain)
    return grpc.secure_channel(target, credentials)


def classify(ch: grpc.Channel, token: str | None = None) -> np.ndarray:
    """The gray model's probabilities for one flat image, over clf.v1."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    request = build_request("gray", [flat_png(100)])
    reply = clf_pb2_grpc.ClassificationServiceStub(ch).Classify(
        request, timeout=30, metadata=metadata
    )
    return result_from_response(reply).predictions[0].probabilities


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def ready(server: ServerThread) -> ServerThread:
    wait_for(lambda: server.call(lambda app: app.dataplane.ready), what="models loaded")
    return server


@pytest.fixture
def plain_answer(model_repository: Path, start_server: Callable[..., ServerThread]) -> np.ndarray:
    with channel(ready(start_server(model_repository))) as ch:
        return classify(ch)


def test_tls_refuses_plaintext_and_answers_as_plaintext_does(
    model_repository: Path, start_server: Callable[..., ServerThread], pki: Pki, plain_answer
) -> None:
    server = ready(start_server(model_repository, tls_cert=pki.server.cert, tls_key=pki.server.key))
    with channel(server) as plain:
        assert refused(lambda: classify(plain)).code() == grpc.StatusCode.UNAVAILABLE
    with channel(server, Authority("unrelated CA").pem) as untrusting:
        assert refused(lambda: classify(untrusting)).code() == grpc.StatusCode.UNAVAILABLE
    with channel(server, pki.ca.pem) as tls:
        np.testing.assert_array_equal(classify(tls), plain_answer)


def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    model_repository: Path, start_server: Callable[..., ServerThread], pki: Pki, plain_answer
) -> None:
    server = ready(
        start_server(
            model_repository,
            tls_cert=pki.server.cert,
            tls_key=pki.server.key,
            tls_client_ca=pki.ca_file,
        )
    )
    for pair in (None, pki.stranger):
        with channel(server, pki.ca.pem, pair) as ch:
            assert refused(lambda: classify(ch)).code() == grpc.StatusCode.UNAVAILABLE
    with channel(server, pki.ca.pem, pki.client) as ch:
        np.testing.assert_array_equal(classify(ch), plain_answer)


def test_tokens_on_every_protocol_health_open_failures_counted(
    model_repository: Path, start_server: Callable[..., ServerThread], pki: Pki, plain_answer
) -> None:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from serve.grpc import grpc_service_pb2, grpc_service_pb2_grpc

    server = start_server(
        model_repository,
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        tls_client_ca=pki.ca_file,
        auth_tokens=TOKENS,
        metrics_port=0,
    )
    with channel(server, pki.ca.pem, pki.client) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        wait_for(
            lambda: (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            ),
            what="SERVING without a token",
        )
        calls: list[Callable[..., object]] = [
            lambda md: clf_pb2_grpc.ClassificationServiceStub(ch).ListModels(
                clf_pb2.ListModelsRequest(), timeout=10, metadata=md
            ),
            lambda md: model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(), timeout=10, metadata=md
            ),
            lambda md: grpc_service_pb2_grpc.GRPCInferenceServiceStub(ch).ServerLive(
                grpc_service_pb2.ServerLiveRequest(), timeout=10, metadata=md
            ),
        ]
        for call in calls:
            error = refused(lambda: call(None))  # noqa: B023
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.details() == MESSAGES["missing"]
            assert "authorization: Bearer <token>" in error.details()
        bad = refused(lambda: calls[0]((("authorization", "Basic czNjcmV0"),)))
        assert bad.code() == grpc.StatusCode.UNAUTHENTICATED
        assert bad.details() == MESSAGES["malformed"]
        wrong = refused(lambda: classify(ch, token="s3cre"))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        assert wrong.details() == MESSAGES["wrong"]
        assert "s3cre" not in wrong.details()
        np.testing.assert_array_equal(classify(ch, token="0ther"), plain_answer)
        calls[2]((("authorization", "bearer s3cret"),))  # the scheme is case-insensitive
    counted = {r: metric(server, "clfserve_auth_failures_total", reason=r) for r in MESSAGES}
    assert counted == {"missing": 3, "malformed": 1, "wrong": 1}


def test_auth_health_closes_health_and_reflection(
    model_repository: Path, start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# the ops team\nops:s3cret\n")
    server = start_server(model_repository, auth_token_file=tokens, auth_health=True)
    with channel(server) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        error = refused(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        assert refused(lambda: list(stream)).code() == grpc.StatusCode.UNAUTHENTICATED
        token = (("authorization", "Bearer s3cret"),)
        health.Check(health_pb2.HealthCheckRequest(), timeout=10, metadata=token)
    with Client(server.target) as client:
        with pytest.raises(Unauthenticated):  # at once: waiting for readiness would not help
            client.wait_ready(30)
        with pytest.raises(Unauthenticated):
            client.list_models()
    with Client(server.target, token="s3cret") as client:
        client.wait_ready(60)
        assert {m.name for m in client.list_models()} == {"gray", "rgb"}


def test_rotated_certificate_is_used_without_restart(
    model_repository: Path, start_server: Callable[..., ServerThread], tmp_path: Path, pki: Pki
) -> None:
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    cert.write_bytes(pki.server.cert.read_bytes())
    key.write_bytes(pki.server.key.read_bytes())
    server = start_server(model_repository, tls_cert=cert, tls_key=key)
    check = health_pb2.HealthCheckRequest()
    with channel(server, pki.ca.pem) as ch:
        health_pb2_grpc.HealthStub(ch).Check(check, timeout=10)
    successor = Authority("next year's CA")
    fresh = successor.issue("localhost", tmp_path / "fresh")
    for path, source in ((key, fresh.key), (cert, fresh.cert)):  # as a deployment replaces them
        staged = path.with_suffix(".new")
        staged.write_bytes(source.read_bytes())
        os.replace(staged, path)
    with channel(server, successor.pem) as ch:
        health_pb2_grpc.HealthStub(ch).Check(check, timeout=10)
    with channel(server, pki.ca.pem) as ch:
        error = refused(lambda: health_pb2_grpc.HealthStub(ch).Check(check, timeout=10))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert server.call(lambda app: app.grpc.tls.reloads) == 1


def test_the_reloader_keeps_the_old_files_until_a_rotation_is_complete(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """What gRPC asks at each new connection (from its own threads, which coverage cannot see,
    so here directly): nothing while the files are unchanged or half-rotated, then the new pair."""
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    cert.write_bytes(pki.server.cert.read_bytes())
    key.write_bytes(pki.server.key.read_bytes())
    reloader = Reloader(TlsFiles(cert, key))
    assert reloader.fetch() is None
    fresh = Authority("next year's CA").issue("localhost", tmp_path / "fresh")

    def deploy(path: Path, source: Path) -> None:  # as a deployment replaces a file
        staged = path.with_suffix(".new")
        staged.write_bytes(source.read_bytes())
        os.replace(staged, path)

    deploy(key, fresh.key)  # the new key, still beside the old certificate
    with caplog.at_level(logging.WARNING, logger="serve.tls"):
        assert reloader.fetch() is None
    assert "TLS files changed but cannot be used yet; keeping the old" in caplog.text
    assert "does not match" in caplog.text
    deploy(cert, fresh.cert)
    assert reloader.fetch() is not None
    assert reloader.fetch() is None and reloader.reloads == 1


def test_a_client_ca_file_without_a_certificate_inside_is_refused(tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    files = TlsFiles(pki.server.cert, pki.server.key, garbage)
    with pytest.raises(ConfigError, match=f"the client CA file {garbage} is unreadable"):
        check(files)


def test_no_tokens_installs_no_interceptor(tmp_path: Path) -> None:
    security = Security.from_settings(make_settings(tmp_path))
    assert security.interceptors(ServeMetrics()) == []


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("s3cret", "malformed"),
        ("Basic s3cret", "malformed"),
        ("Bearer ", "malformed"),
        ("Bearer s3cret2", "wrong"),
        ("Bearer ünïcode", "wrong"),
        ("Bearer s3cret", None),
        ("bearer   0ther ", None),
    ],
)
def test_check_bearer(header: str | None, reason: str | None) -> None:
    tokens = load_tokens(None, TOKENS.get_secret_value())
    assert tokens is not None
    assert check_bearer(header, tokens) == reason


def test_token_lines() -> None:
    text = "# ops\nalice:s3cret\n\nplain-token\nsvc: with:colon \n"
    assert parse_tokens(text, "f") == [
        ("alice", "s3cret"),
        ("token2", "plain-token"),
        ("svc", "with:colon"),
    ]
    with pytest.raises(ConfigError, match="entry 1"):
        parse_tokens("name:two words", "f")


def _config_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    ca = Authority("ca")
    good, other = ca.issue("localhost", tmp / "good"), ca.issue("localhost", tmp / "other")
    leaf = Authority("just a leaf", is_ca=False).write(tmp / "leaf.pem")
    (tmp / "empty.txt").write_text("# no tokens yet\n")
    tls = ["--tls-cert", str(good.cert), "--tls-key", str(good.key)]
    return {
        "missing key": (
            ["--tls-cert", str(good.cert), "--tls-key", str(tmp / "nope.key")],
            "cannot read the TLS key",
        ),
        "key of another cert": (
            ["--tls-cert", str(good.cert), "--tls-key", str(other.key)],
            "does not match the certificate",
        ),
        "cert without key": (["--tls-cert", str(good.cert)], "go together"),
        "client CA not a CA": ([*tls, "--tls-client-ca", str(leaf)], "holds no CA certificate"),
        "empty token file": (["--auth-token-file", str(tmp / "empty.txt")], "holds no token"),
        "missing token file": (
            ["--auth-token-file", str(tmp / "nope.txt")],
            "cannot read the auth token file",
        ),
    }


def test_bad_configuration_refuses_to_start(tmp_path: Path, model_repository: Path) -> None:
    for case, (flags, expected) in _config_cases(tmp_path).items():
        done = subprocess.run(
            [sys.executable, "-m", "serve", "--repository", str(model_repository), "--port", "0",
             "--metrics-port", "off", *flags],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (case, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr, (case, done.stderr)
        assert done.stderr.startswith("clfserve: error: "), (case, done.stderr)
