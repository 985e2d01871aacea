"""`clfserve --workers 2`: two processes share the port, both answer, a dead worker comes back,
SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from serve.grpc import clf_pb2 as pb
from serve.grpc import clf_pb2_grpc
from tests.serve.conftest import flat_png, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def _metrics_ports(log: Path) -> list[int]:
    """The /metrics ports the workers logged (each picked a free one: --metrics-port 0)."""
    return [int(p) for p in re.findall(r"metrics on http://[^:]+:(\d+)/metrics", log.read_text())]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:  # a thread may end between listing and reading
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def _requests_served(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith('clfserve_requests_total{code="OK"')
    )


@pytest.mark.slow
def test_two_workers_share_the_port(model_repository: Path, tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    command = [
        sys.executable, "-m", "serve", "--repository", str(model_repository), "--host", "127.0.0.1",
        "--port", "0", "--port-file", str(port_file), "--metrics-port", "0",
        "--workers", "2", "--no-watch", "--rest-port", "0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:  # a file, not a pipe nobody reads while the test runs
        process = subprocess.Popen(command, env=env, stderr=stderr, start_new_session=True)
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip() != "", 90)
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        wait_for(lambda: len(_children(process.pid)) == 1, 60, "the second worker")
        request = pb.ClassifyRequest(inputs=[pb.Input(image=flat_png(40))])
        request.model_spec.name = "gray"

        def classify_on_new_connections(count: int) -> None:
            for _ in range(count):  # a local subchannel pool: every channel connects anew
                options = [("grpc.use_local_subchannel_pool", 1)]
                with grpc.insecure_channel(target, options=options) as channel:
                    stub = clf_pb2_grpc.ClassificationServiceStub(channel)
                    answer = stub.Classify(request, timeout=60, wait_for_ready=True)
                    assert answer.model_spec.version == 1

        wait_for(lambda: len(_metrics_ports(log)) == 2, 90, "both workers' metrics ports")
        ports = _metrics_ports(log)
        for port in ports:
            wait_for(lambda port=port: _loaded(port), 90, f"models loaded (metrics on {port})")
        classify_on_new_connections(40)
        served = [_requests_served(port) for port in ports]
        assert sum(served) == 40 and min(served) > 0, served  # the kernel spread connections

        first_child = _children(process.pid)[0]
        os.kill(first_child, signal.SIGKILL)
        wait_for(lambda: _children(process.pid) not in ([], [first_child]), 60, "a new worker")
        classify_on_new_connections(4)

        process.send_signal(signal.SIGTERM)
        process.wait(timeout=90)
        wait_for(lambda: not _alive_in_group(process.pid), 30, "every worker to exit")
    finally:
        if process.poll() is None or _alive_in_group(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stderr = log.read_text()
    assert process.returncode == 0, stderr
    assert stderr.count("starting it again") == 1, stderr  # only the worker we killed: the
    # others shared the gRPC and the REST port without failing to bind


def _alive_in_group(group: int) -> bool:
    """Whether any process of the session `group` (the server and its workers) still runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == group and fields[0] != "Z":
            return True
    return False


def _loaded(port: int) -> bool:
    """Whether the worker with /metrics on `port` has the test's model loaded."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    except OSError:
        return False
    return 'clfserve_loaded_versions{model="gray"} 1.0' in text.decode()


_WORKER = """
import sys, time
from serve.workers import die_with_parent
die_with_parent()
print("ready", flush=True)
time.sleep(120)
"""
_MIDDLE = """
import os, subprocess, sys, time
from serve.workers import PARENT_PID_ENV
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]],
                         env={**os.environ, PARENT_PID_ENV: str(os.getpid())})
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_worker_dies_with_the_process_that_started_it() -> None:
    """SIGKILL the process that started a worker: the worker gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG, set by the worker itself after exec) instead of living on."""
    with subprocess.Popen(
        [sys.executable, "-c", _MIDDLE, _WORKER], stdout=subprocess.PIPE, text=True,
        cwd=REPO_ROOT,
    ) as middle:  # fmt: skip
        worker = int(middle.stdout.readline())  # type: ignore[union-attr]
        try:
            assert middle.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
            assert _alive(worker)
            middle.kill()
            middle.wait()
            wait_for(lambda: not _alive(worker), 30, "the worker to die with its parent")
        finally:
            middle.kill()
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)


def test_a_worker_whose_parent_is_gone_exits_at_once() -> None:
    """The parent died before the worker set its death signal: the worker notices and exits."""
    result = subprocess.run(
        [sys.executable, "-c", _WORKER], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, env={**os.environ, "CLF_WORKER_PARENT_PID": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "the first process (1) has already exited" in result.stderr
    assert "ready" not in result.stdout


def test_a_worker_whose_parent_is_alive_carries_on() -> None:
    """And the variable naming its parent is not passed on to what the worker starts."""
    code = (
        "import os; from serve.workers import PARENT_PID_ENV, die_with_parent; "
        "die_with_parent(); print(os.environ.get(PARENT_PID_ENV))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, env={**os.environ, "CLF_WORKER_PARENT_PID": str(os.getpid())},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "None\n"
