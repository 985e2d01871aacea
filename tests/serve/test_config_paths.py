"""Start-up configuration paths: security settings refused before anything listens, the
security line of the log, PEM checks, client arguments, and repository directories that are
incomplete, missing or malformed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from serve.client import Client, to_input
from serve.errors import ManifestError
from serve.repository import complete_versions, read_version, scan
from serve.security import ConfigError, Security
from serve.tls import TlsFiles, check
from tests.serve.conftest import make_settings


def test_security_settings_refused_before_start(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"--tls-client-ca .* needs --tls-cert and --tls-key"):
        Security.from_settings(make_settings(tmp_path, tls_client_ca=pem))
    with pytest.raises(ConfigError, match="--auth-health needs tokens"):
        Security.from_settings(make_settings(tmp_path, auth_health=True))


def test_the_security_line_names_what_is_on_never_a_token(tmp_path: Path) -> None:
    tokens = SecretStr("alice:s3cret-token-1,bob:s3cret-token-2")
    open_health = Security.from_settings(make_settings(tmp_path, auth_tokens=tokens))
    assert open_health.describe() == (
        "plaintext, 2 bearer tokens required on every call but health and reflection"
    )
    closed = Security.from_settings(
        make_settings(tmp_path, auth_tokens=SecretStr("alice:s3cret-token-1"), auth_health=True)
    )
    assert closed.describe() == "plaintext, 1 bearer token required on every call"
    files = TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert Security(files, None).describe() == "TLS, no bearer tokens"
    mutual = TlsFiles(files.cert, files.key, tmp_path / "ca.pem")
    assert Security(mutual, closed.tokens, True).describe().startswith("mutual TLS, 1 bearer")
    assert "s3cret" not in open_health.describe() + closed.describe()


def test_a_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    der = tmp_path / "cert.der"
    der.write_bytes(b"\x30\x82\x01\x0a binary")
    with pytest.raises(ConfigError, match=r"the TLS certificate .*cert\.der is not a PEM file"):
        check(TlsFiles(der, der))


def test_client_arguments_checked_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot send int: give a path, bytes or an ndarray"):
        to_input(7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a client certificate needs its key"):
        Client("127.0.0.1:1", tls_cert=tmp_path / "cert.pem")


def test_repository_directories_incomplete_missing_or_malformed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert complete_versions(tmp_path / "nowhere") == {}
    half = tmp_path / "m" / "1"
    half.mkdir(parents=True)
    (half / "manifest.json").write_text("{}")
    with pytest.raises(ManifestError, match="not a complete version"):
        read_version("m", 1, half)
    (half / "saved_model.pb").write_bytes(b"")
    (half / "manifest.json").write_text("not json")
    with caplog.at_level(logging.WARNING, logger="serve.repository"):
        assert scan(tmp_path) == {}  # the only version is malformed: the model is left out
    assert any("skipping" in r.getMessage() and "unreadable manifest" in r.getMessage()
               for r in caplog.records)  # fmt: skip
