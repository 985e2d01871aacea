"""deploy/Dockerfile and deploy/clfserve.service offline (no container engine here): their
structure, that every variable, flag and port is one clfserve has, that the package the image
builds holds the server, and that the image's entry command line (ENTRYPOINT + CMD with the
image's ENV) starts clfserve on a temp repository, which the HEALTHCHECK command then sees
SERVING and the REST port answers."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.conftest import DEPLOY, PORTS, flags, settings_from, unknown_variables
from tests.serve.conftest import flat_png, wait_for

Instruction = tuple[str, str]


def instructions(path: Path = DEPLOY / "Dockerfile") -> list[Instruction]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(text.split(" ", 1)[0].upper(), text.split(" ", 1)[1]) for text in joined]


def final_stage() -> list[Instruction]:
    steps = instructions()
    last = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, text in final_stage():
        if name == "ENV":
            for item in shlex.split(text):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def exec_form(name: str) -> list[str]:
    [text] = [text for step, text in final_stage() if step == name]
    return json.loads(text.removeprefix("CMD ").strip())


def test_dockerfile_structure() -> None:
    steps = instructions()
    stages = [text for name, text in steps if name == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]  # build, then runtime
    args = dict(text.split("=", 1) for name, text in steps if name == "ARG" and "=" in text)
    assert args["PYTHON_IMAGE"].endswith("-slim")
    final = final_stage()
    assert any(
        text.startswith("--from=build /opt/clfserve") for name, text in final if name == "COPY"
    )
    [user] = [text for name, text in final if name == "USER"]
    assert user not in ("root", "0")
    copies = [text for name, text in final if name == "COPY"]
    assert any("trained/ /models/" in text for text in copies)
    assert image_env()["CLFSERVE_REPOSITORY"] == "/models"


def test_dockerfile_ports_variables_and_entry_point(help_text: str) -> None:
    env = image_env()
    assert not unknown_variables(list(env))
    [exposed] = [text.split() for name, text in final_stage() if name == "EXPOSE"]
    assert sorted(int(port) for port in exposed) == sorted(PORTS.values())
    for field, port in PORTS.items():
        assert env[f"CLFSERVE_{field.upper()}"] == str(port)
    assert exec_form("ENTRYPOINT") == ["clfserve"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["clfserve"] == "serve.app:main"
    assert all(flag in help_text for flag in flags(exec_form("CMD")))
    [health] = [text for name, text in final_stage() if name == "HEALTHCHECK"]
    assert '["clfserve-healthcheck"]' in health
    assert os.access(DEPLOY / "healthcheck.py", os.X_OK)  # COPY keeps the mode: runnable as is
    assert any(
        text == "deploy/healthcheck.py /opt/clfserve/bin/clfserve-healthcheck"
        for name, text in instructions()
        if name == "COPY"
    )


def test_the_built_package_holds_the_server(tmp_path: Path) -> None:
    """The build stage's `pip install .` from exactly what it COPYs: serve/http and the
    generated protobuf code are in the package."""
    source = tmp_path / "src"
    steps = instructions()
    build = steps[: max(i for i, (name, _) in enumerate(steps) if name == "FROM")]
    for name, text in build:
        if name == "COPY" and not text.startswith("--") and text.split()[-1].endswith("/"):
            *paths, target = text.split()
            for path in paths:
                origin, into = REPO_ROOT / path, source / target.removeprefix("./")
                if origin.is_dir():
                    shutil.copytree(origin, into / Path(path).name if target == "./" else into)
                else:
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, into)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--quiet", "-w", str(tmp_path / "dist"), str(source)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("clfserve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = ["serve/http/app.py", "serve/app.py", "batch/cli.py",
                "serve/grpc/_proto/inference/grpc_service_pb2.py",
                "serve/grpc/_proto/clf/v1/clf_pb2.py"]  # fmt: skip
    assert [path for path in expected if path not in names] == []


def healthcheck(target: str) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command (deploy/healthcheck.py) against `target`."""
    command = [sys.executable, str(DEPLOY / "healthcheck.py"), target]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_image_entry_command_starts_the_server(repository_copy: Path, tmp_path: Path) -> None:
    env = {**os.environ, **image_env()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env.update({
        "CLFSERVE_REPOSITORY": str(repository_copy),
        "CLFSERVE_HOST": "127.0.0.1",
        "CLFSERVE_PORT": "0", "CLFSERVE_REST_PORT": "0", "CLFSERVE_METRICS_PORT": "0",
        "CLFSERVE_RUNTIME_CACHE": str(tmp_path / "cache"),
    })  # fmt: skip
    files = {"grpc": tmp_path / "grpc-port", "rest": tmp_path / "rest-port"}
    extra = ["--port-file", str(files["grpc"]), "--rest-port-file", str(files["rest"])]
    command = exec_form("ENTRYPOINT") + exec_form("CMD") + extra  # docker run IMAGE ARGS...
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: all(f.exists() and f.read_text().strip() for f in files.values())
                 or server.poll() is not None, what="the port files")  # fmt: skip
        assert server.poll() is None, (tmp_path / "server.log").read_text()
        grpc_target = f"127.0.0.1:{files['grpc'].read_text().strip()}"
        wait_for(lambda: healthcheck(grpc_target).returncode == 0, what="SERVING")
        rest = f"http://127.0.0.1:{files['rest'].read_text().strip()}"
        answer = httpx.post(f"{rest}/v1/models/gray/classify", content=flat_png(200),
                            headers={"Content-Type": "image/png"}, timeout=60)  # fmt: skip
        assert answer.status_code == 200 and answer.json()["version"] == 1
        log.flush()
        lines = (tmp_path / "server.log").read_text().splitlines()
        assert any(line.startswith("{") for line in lines), lines[:5]  # CLFSERVE_LOG_FORMAT=json
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
        log.close()
    assert healthcheck(grpc_target).returncode == 1  # stopped: the check fails


def unit(path: Path = DEPLOY / "clfserve.service") -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_systemd_unit(help_text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = unit()
    env = dict(item.split("=", 1) for k, v in pairs if k == "Environment" for item in v.split())
    assert not unknown_variables(list(env))
    [start] = [v for k, v in pairs if k == "ExecStart"]
    program, *args = shlex.split(start)
    assert Path(program).name == "clfserve"
    assert all(flag in help_text for flag in flags(args))
    settings = settings_from(args, {k: v for k, v in env.items() if k.startswith("CLFSERVE_")},
                             monkeypatch)  # fmt: skip
    assert (settings.port, settings.rest_port, settings.metrics_port) == tuple(PORTS.values())
    assert float(dict(pairs)["TimeoutStopSec"]) > settings.grace
    assert dict(pairs)["User"] != "root" and dict(pairs)["KillSignal"] == "SIGTERM"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify`, with ExecStart pointing at this checkout's clfserve."""
    text = (DEPLOY / "clfserve.service").read_text()
    script = Path(sys.executable).with_name("clfserve")
    text = text.replace("/opt/clfserve/.venv/bin/clfserve", str(script))
    (tmp_path / "clfserve.service").write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "clfserve.service")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    problems = [line for line in result.stderr.splitlines() if "clfserve.service" in line]
    assert not problems, result.stderr
