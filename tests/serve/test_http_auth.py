"""The REST port under the gRPC port's security settings: bearer tokens (401 saying what is
expected, health open unless --auth-health, counted by reason) and TLS / mutual TLS."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from serve.http.auth import MESSAGES
from tests.serve.conftest import ServerThread, flat_png, metric, wait_for
from tests.serve.security_certs import Authority

TOKENS = SecretStr("alice:s3cret, bob:0ther")
Start = Callable[..., ServerThread]
PNG = {"content": flat_png(100), "headers": {"Content-Type": "image/png"}}


def rest(server: ServerThread, scheme: str = "http") -> str:
    assert server.app is not None and server.app.rest_port
    return f"{scheme}://localhost:{server.app.rest_port}"


def test_tokens_on_every_endpoint_but_health(model_repository: Path, start_server: Start) -> None:
    server = start_server(model_repository, rest_port=0, metrics_port=0, auth_tokens=TOKENS)
    with httpx.Client(base_url=rest(server), timeout=60) as http:
        assert http.get("/v2/health/live").status_code == 200  # probes need no token
        wait_for(lambda: http.get("/v2/health/ready").status_code == 200, what="ready")
        for path in ("/v2", "/v2/models/gray", "/v1/models/gray"):
            answer = http.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert "Authorization: Bearer <token>" in answer.json()["error"]
        cases = {"missing": {}, "malformed": {"Authorization": "s3cret"},
                 "wrong": {"Authorization": "Bearer nope"}}  # fmt: skip
        for reason, headers in cases.items():
            sent = {**PNG["headers"], **headers}
            answer = http.post("/v1/models/gray/classify", content=PNG["content"], headers=sent)
            assert answer.status_code == 401 and answer.json()["error"] == MESSAGES[reason]
        counted = {r: metric(server, "clfserve_auth_failures_total", reason=r) for r in cases}
        assert counted == {"missing": 4, "malformed": 1, "wrong": 1}
        accepted = {**PNG["headers"], "Authorization": "Bearer 0ther"}
        answer = http.post("/v1/models/gray/classify", content=PNG["content"], headers=accepted)
        assert answer.status_code == 200 and answer.json()["version"] == 1
        requests = {"model": "gray", "version": "1", "code": "OK"}
        assert (
            metric(server, "clfserve_requests_total", **requests) == 1
        )  # refusals never reached it


def test_auth_health_closes_health_too(model_repository: Path, start_server: Start) -> None:
    server = start_server(model_repository, rest_port=0, auth_tokens=TOKENS, auth_health=True)
    with httpx.Client(base_url=rest(server), timeout=60) as http:
        assert http.get("/v2/health/ready").status_code == 401
        assert http.get("/v2/health/live", headers={"Authorization": "Bearer s3cret"}).json() == {
            "live": True
        }


def test_tls_and_mutual_tls(model_repository: Path, start_server: Start, tmp_path: Path) -> None:
    ca = Authority("clfserve test CA")
    ca_file = ca.write(tmp_path / "ca.pem")
    server_pair = ca.issue("localhost", tmp_path / "server")
    client_pair = ca.issue("client", tmp_path / "client")
    server = start_server(
        model_repository, rest_port=0, tls_cert=server_pair.cert, tls_key=server_pair.key,
        tls_client_ca=ca_file,
    )  # fmt: skip
    trusted = ssl.create_default_context(cafile=str(ca_file))
    with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
        httpx.get(rest(server, "https") + "/v2/health/live", verify=trusted, timeout=30)
    with pytest.raises(httpx.HTTPError):  # plaintext on the TLS port
        httpx.get(rest(server) + "/v2/health/live", timeout=30)
    trusted.load_cert_chain(client_pair.cert, client_pair.key)
    with httpx.Client(base_url=rest(server, "https"), verify=trusted, timeout=60) as http:
        assert http.get("/v2/health/live").json() == {"live": True}


def test_rotated_certificate_is_used_without_restart(
    model_repository: Path, start_server: Start, tmp_path: Path
) -> None:
    first, successor = Authority("this year's CA"), Authority("next year's CA")
    issued = first.issue("localhost", tmp_path / "first")
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    cert.write_bytes(issued.cert.read_bytes())
    key.write_bytes(issued.key.read_bytes())
    server = start_server(model_repository, rest_port=0, tls_cert=cert, tls_key=key)
    old_ca = ssl.create_default_context(cafile=str(first.write(tmp_path / "first.pem")))
    new_ca = ssl.create_default_context(cafile=str(successor.write(tmp_path / "next.pem")))
    url = rest(server, "https") + "/v2/health/live"
    assert httpx.get(url, verify=old_ca, timeout=30).json() == {"live": True}
    fresh = successor.issue("localhost", tmp_path / "fresh")
    for path, source in ((key, fresh.key), (cert, fresh.cert)):  # as a deployment replaces them
        staged = path.with_suffix(".new")
        staged.write_bytes(source.read_bytes())
        os.replace(staged, path)
    assert httpx.get(url, verify=new_ca, timeout=30).json() == {"live": True}
    with pytest.raises(httpx.HTTPError):  # the old certificate is no longer presented
        httpx.get(url, verify=old_ca, timeout=30)


def test_unusable_rotated_files_keep_the_old_certificate(
    model_repository: Path, start_server: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = Authority("clfserve test CA")
    issued, other = ca.issue("localhost", tmp_path / "first"), ca.issue("localhost", tmp_path / "o")
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    cert.write_bytes(issued.cert.read_bytes())
    key.write_bytes(issued.key.read_bytes())
    server = start_server(model_repository, rest_port=0, tls_cert=cert, tls_key=key)
    trusted = ssl.create_default_context(cafile=str(ca.write(tmp_path / "ca.pem")))
    url = rest(server, "https") + "/v2/health/live"
    assert httpx.get(url, verify=trusted, timeout=30).json() == {"live": True}
    staged = key.with_suffix(".new")  # half a rotation: a new key, the certificate not yet
    staged.write_bytes(other.key.read_bytes())
    os.replace(staged, key)
    with caplog.at_level(logging.WARNING, logger="serve.http.auth"):
        answer = httpx.get(url, verify=trusted, timeout=30)
    assert answer.json() == {"live": True}  # the handshake went on with the old pair
    warned = [r.getMessage() for r in caplog.records if r.name == "serve.http.auth"]
    assert warned and all("cannot be used yet; keeping the old" in m for m in warned)
    assert "does not match the certificate" in warned[0]
