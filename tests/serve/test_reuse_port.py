"""`clfserve --reuse-port`: two independently started servers listen on one port (SO_REUSEPORT),
and one without it is refused that port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from serve.client import Client
from serve.loader import load
from serve.preprocess import preprocess_bytes
from serve.repository import resolve
from tests.conftest import REPO_ROOT
from tests.serve.conftest import flat_png


def _command(repository: Path, port: int, port_file: Path, *flags: str) -> list[str]:
    return [
        sys.executable, "-m", "serve", "--repository", str(repository), "--host", "127.0.0.1",
        "--port", str(port), "--port-file", str(port_file), "--metrics-port", "off",
        "--no-watch", *flags,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}


class Server:
    """A `python -m serve` subprocess; its port once it wrote its port file."""

    def __init__(self, repository: Path, port: int, workdir: Path, name: str, *flags: str):
        self.port_file = workdir / f"{name}.port"
        self.log = workdir / f"{name}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                _command(repository, port, self.port_file, *flags),
                env=_env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_port(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while not (self.port_file.exists() and self.port_file.read_text().strip()):
            assert self.process.poll() is None, f"clfserve exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"no port after {timeout} s"
            time.sleep(0.05)
        return int(self.port_file.read_text())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(60)


IMAGE = flat_png(230)


def _answers(port: int) -> np.ndarray:
    with Client(f"127.0.0.1:{port}") as client:
        client.wait_ready(60)
        return client.classify("gray", [IMAGE], top_k=1).predictions[0].probabilities


@pytest.mark.slow
def test_two_servers_share_a_port_only_with_reuse_port(
    model_repository: Path, tmp_path: Path
) -> None:
    version = resolve(model_repository, "gray")
    expected = load(version).predict(preprocess_bytes(IMAGE, version.manifest.preprocessing)[None])
    first = Server(model_repository, 0, tmp_path, "first", "--reuse-port")
    second = None
    try:
        port = first.wait_port()
        second = Server(model_repository, port, tmp_path, "second", "--reuse-port")
        assert second.wait_port() == port
        assert first.process.poll() is None  # both listening on it now
        # A server that does not allow sharing cannot bind a port others hold.
        refused = subprocess.run(
            _command(model_repository, port, tmp_path / "third.port", "--no-reuse-port"),
            env=_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert f"clfserve: error: cannot listen on 127.0.0.1:{port}" in refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr
        assert not (tmp_path / "third.port").exists()
        np.testing.assert_allclose(_answers(port), expected[0], atol=1e-5)
        assert first.stop() == 0, first.log.read_text()
        # Only the second is left: new connections to the port reach it.
        np.testing.assert_allclose(_answers(port), expected[0], atol=1e-5)
        assert second.process.poll() is None
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.log.read_text()
