"""`clfbatch run --server`: a real clfserve subprocess gives the same predictions as in-process."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.client import Client
from serve.loader import Classifier, load
from serve.repository import ModelVersion
from tests.batch.conftest import cli_env, run_cli
from tests.images import RGB_CLASSES
from tests.serve.conftest import ServerThread, make_settings

pytestmark = pytest.mark.slow


def start_clfserve(repository: Path, port_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m serve` on a free port; returns the process and its HOST:PORT."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve",
            "--repository",
            str(repository),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--metrics-port",
            "off",
            "--no-watch",
        ],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        if port_file.exists() and port_file.read_text().strip():
            target = f"127.0.0.1:{port_file.read_text().strip()}"
            with Client(target) as client:  # listening comes before the models are loaded
                client.wait_ready(max(1.0, deadline - time.monotonic()))
            return process, target
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"clfserve did not start (exit code {process.returncode})")


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, target = start_clfserve(model_repository, tmp_path_factory.mktemp("serve") / "port")
    try:
        yield target
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_in_process_and_server_give_identical_predictions(
    server: str, model_repository: Path, rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, truth = rgb_folder
    (folder / "blue" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    local = run_cli(
        "run",
        folder,
        "--model",
        "rgb",
        "--repository",
        model_repository,
        "--out",
        tmp_path / "local.csv",
        "--batch-size",
        "4",
        cwd=tmp_path,
    )
    assert local.returncode == 0, local.stderr
    remote = run_cli(
        "run",
        folder,
        "--model",
        "rgb",
        "--server",
        server,
        "--out",
        tmp_path / "remote.csv",
        cwd=tmp_path,
    )
    assert remote.returncode == 0, remote.stderr
    local_rows, remote_rows = _rows(tmp_path / "local.csv"), _rows(tmp_path / "remote.csv")
    assert len(local_rows) == len(truth) + 1
    assert [r["path"] for r in local_rows] == [r["path"] for r in remote_rows]
    for mine, theirs in zip(local_rows, remote_rows, strict=True):
        assert (mine["predicted"], mine["error"] != "") == (
            theirs["predicted"],
            theirs["error"] != "",
        )
        assert (mine["version"], mine["true_label"]) == (theirs["version"], theirs["true_label"])
        for label in RGB_CLASSES:
            if mine["error"] == "":
                assert float(theirs[f"prob_{label}"]) == pytest.approx(
                    float(mine[f"prob_{label}"]), abs=2e-6
                )
    # Same metrics, so the same summary text.
    assert local.stdout.split("report:")[0] == remote.stdout.split("report:")[0]


def test_unknown_model_or_version_on_the_server_exit_2(
    server: str, rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, _ = rgb_folder
    result = run_cli("run", folder, "--model", "nope", "--server", server, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "'nope' not found" in result.stderr and server in result.stderr
    result = run_cli(
        "run", folder, "--model", "rgb", "--version", "5", "--server", server, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "no version 5" in result.stderr and "available versions: 1" in result.stderr


def _rgb_fails_to_load(version: ModelVersion) -> Classifier:
    if version.name == "rgb":
        raise OSError("rgb: saved_model.pb is unreadable")
    return load(version)


def test_a_version_that_failed_to_load_on_the_server_exit_3_with_its_reason(
    model_repository: Path, rgb_folder: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The server lists rgb with its only version failed (no default version): the run names
    that version, its state and the server's reason, and writes nothing."""
    folder, _ = rgb_folder
    server = ServerThread(make_settings(model_repository), _rgb_fails_to_load).start()
    try:
        with Client(server.target) as client:
            client.wait_ready(60)  # gray loaded; rgb failed
        result = run_cli("run", folder, "--model", "rgb", "--server", server.target, cwd=tmp_path)
    finally:
        server.stop()
    assert result.returncode == 3, result.stderr
    assert (
        f"clfbatch: cannot use clfserve at {server.target}: model 'rgb' version 1 is failed on "
        "the server: OSError: rgb: saved_model.pb is unreadable"
    ) in result.stderr
    assert not list(tmp_path.glob("*.csv*"))
