"""Clients of a server with mutual TLS and bearer tokens: serve.client, tritonclient, the TF
Serving stubs, `clfbatch run --server` and `clfbatch watch --server` (docs/security.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from pydantic import SecretStr

from serve.client import Client
from serve.errors import ServerUnavailable, Unauthenticated
from tests.batch.conftest import cli_env, write_rgb_folder
from tests.batch.watch.helpers import FAST, Daemon, image_bytes, row_count, wait_rows
from tests.conftest import REPO_ROOT
from tests.serve.conftest import ServerThread, flat_png, make_settings
from tests.serve.security_certs import Authority, Issued

TOKEN = "s3cret"


@dataclass
class Secured:
    server: ServerThread
    authority: Authority
    ca: Path
    client: Issued
    stranger: Issued

    @property
    def target(self) -> str:
        return f"localhost:{self.server.port}"

    def flags(self, token: str | None = TOKEN) -> list[str]:
        flags = ["--server", self.target, "--tls-ca", str(self.ca)]
        flags += ["--tls-cert", str(self.client.cert), "--tls-key", str(self.client.key)]
        return flags + (["--token", token] if token else [])


def start(repository: Path, tmp: Path, ca: Authority, tokens: str, port: int = 0) -> ServerThread:
    server_pair = ca.issue("localhost", tmp / f"server-{time.monotonic_ns()}")
    settings = make_settings(
        repository,
        port=port,
        tls_cert=server_pair.cert,
        tls_key=server_pair.key,
        tls_client_ca=ca.write(tmp / "client-ca.pem"),
        auth_tokens=SecretStr(tokens),
    )
    return ServerThread(settings).start()


@pytest.fixture(scope="module")
def secured(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("pki")
    ca = Authority("clfserve test CA")
    secured = Secured(
        start(model_repository, tmp, ca, f"batch:{TOKEN}"),
        ca,
        ca.write(tmp / "ca.pem"),
        ca.issue("client", tmp / "client"),
        Authority("another CA").issue("client", tmp / "stranger"),
    )
    try:
        expected(secured)  # warm: the server's own worker threads start before any test does
        yield secured
    finally:
        secured.server.stop()  # the watch test restarts it


def client(s: Secured, token: str | None = TOKEN, pair: Issued | None = None) -> Client:
    pair = pair or s.client
    return Client(s.target, tls_ca=s.ca, tls_cert=pair.cert, tls_key=pair.key, token=token)


def expected(s: Secured) -> np.ndarray:
    with client(s) as c:
        c.wait_ready(60)
        return c.classify("gray", [flat_png(100)]).predictions[0].probabilities


def test_serve_client(secured: Secured) -> None:
    with client(secured) as c:
        c.wait_ready(60)
        assert {m.name for m in c.list_models()} == {"gray", "rgb"}
    for token in (None, "s3cre"):
        with client(secured, token) as c, pytest.raises(Unauthenticated, match="Bearer <token>"):
            c.classify("gray", [flat_png(100)])
    with client(secured, pair=secured.stranger) as c, pytest.raises(ServerUnavailable):
        c.wait_ready(1)


def test_tritonclient_with_ssl_and_headers(secured: Secured) -> None:
    import tritonclient.grpc as triton

    c = triton.InferenceServerClient(
        secured.target,
        ssl=True,
        root_certificates=str(secured.ca),
        private_key=str(secured.client.key),
        certificate_chain=str(secured.client.cert),
    )
    try:
        images = triton.InferInput("images", [1], "BYTES")
        images.set_data_from_numpy(np.array([flat_png(100)], dtype=np.object_))
        headers = {"authorization": f"Bearer {TOKEN}"}
        assert c.is_server_ready(headers=headers)
        result = c.infer("gray", [images], headers=headers)
        np.testing.assert_array_equal(result.as_numpy("probabilities")[0], expected(secured))
        with pytest.raises(triton.InferenceServerException, match="Bearer"):
            c.infer("gray", [images], headers={"authorization": "Bearer nope"})
    finally:
        c.close()


def test_tfserving_stub_with_call_credentials(secured: Secured) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gray"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([flat_png(100)]))
    transport = grpc.ssl_channel_credentials(
        secured.ca.read_bytes(), *reversed(secured.client.pair())
    )
    token = grpc.access_token_call_credentials(TOKEN)  # sends "authorization: Bearer ..."
    credentials = grpc.composite_channel_credentials(transport, token)
    with grpc.secure_channel(secured.target, credentials) as ch:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, timeout=30)
    probabilities = tf.make_ndarray(reply.outputs["probabilities"])[0]
    np.testing.assert_array_equal(probabilities, expected(secured))
    with grpc.secure_channel(secured.target, transport) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def clfbatch(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batch", *map(str, args)],
        cwd=cwd, env={**cli_env(), **env}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_clfbatch_run(secured: Secured, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    write_rgb_folder(folder, per_class=2)
    run = ("run", folder, "--model", "rgb", "-q")
    done = clfbatch(*run, *secured.flags(token=None), cwd=tmp_path, CLFBATCH_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "images-rgb.csv").is_file()
    refusals = {
        "no token": (secured.flags(token=None), "pass --token or set CLFBATCH_TOKEN"),
        "wrong token": (secured.flags(token="nope"), "not one this server accepts"),
        "plaintext": (["--server", secured.target, "--token", TOKEN], "pass --tls-ca"),
        "untrusted": ([*secured.flags()[:2], "--tls-ca", str(secured.client.cert)], "--tls-ca"),
    }
    for case, (flags, message) in refusals.items():
        done = clfbatch(*run, "--out", tmp_path / f"{case}.csv", *flags, cwd=tmp_path)
        assert done.returncode == 3, (case, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("clfbatch: cannot use clfserve"), case
        assert message in lines[0], (case, lines[0])
        assert not (tmp_path / f"{case}.csv").exists()


def test_watch_keeps_files_while_the_server_refuses(
    secured: Secured, model_repository: Path, tmp_path: Path
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    report = out / "labels.csv"
    rng = np.random.default_rng(4)
    files = {f"f{i}.png": image_bytes("gray", "light", rng) for i in range(6)}
    refused = clfbatch("watch", inbox, "--model", "gray", "--out", out,
                       *secured.flags(token="nope"), cwd=REPO_ROOT)  # fmt: skip
    assert refused.returncode == 3, refused.stderr
    assert "not one this server accepts" in refused.stderr and "Traceback" not in refused.stderr
    port, tmp = secured.server.port, tmp_path / "pki"
    tmp.mkdir()
    with Daemon(inbox, out, "--model", "gray", *secured.flags(), *FAST, log=tmp_path / "log") as d:
        d.wait_ready()
        for name in list(files)[:3]:
            (inbox / name).write_bytes(files[name])
        wait_rows(report, 3, d)
        secured.server.stop()  # back on the same port, refusing the watcher's token
        secured.server = start(model_repository, tmp, secured.authority, "someone-else", port)
        try:
            for name in list(files)[3:]:
                (inbox / name).write_bytes(files[name])
            deadline = time.monotonic() + 60
            while "not one this server accepts; retrying" not in d.log_text():
                assert time.monotonic() < deadline, d.log_text()
                time.sleep(0.1)
            assert row_count(report) == 3
            assert all((inbox / name).exists() for name in list(files)[3:])
            assert d.stop() == 0, d.log_text()
        finally:
            secured.server.stop()
    assert sorted(os.listdir(inbox)) == sorted(list(files)[3:])
