"""Replicas behind client-side load balancing: `Client("a:p,b:p")` spreads calls round-robin
over healthy replicas, stops sending to one that reports NOT_SERVING, stops or dies, and
retries the calls a dying replica cut; `clfbatch run --server a,b` writes the report one
server writes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from pydantic import SecretStr

from serve.client import Client
from serve.errors import Unauthenticated
from serve.replicas import channel_options, channel_target
from tests.batch.conftest import cli_env, run_cli, write_rgb_folder
from tests.serve.conftest import ServerThread, flat_png, metric, wait_for
from tests.serve.security_certs import Authority

Start = Callable[..., ServerThread]
PNG = flat_png(40)


def served(server: ServerThread) -> float:
    """gray/1 requests `server` answered OK."""
    return metric(server, "clfserve_requests_total", model="gray", version="1", code="OK")


def set_overall_health(server: ServerThread, status: int) -> None:
    """Flip the replica's overall health as a load or a drain would (the server keeps serving)."""
    assert server.loop is not None and server.app is not None
    health = server.app.grpc.health
    asyncio.run_coroutine_threadsafe(health.set("", status), server.loop).result(10)


@pytest.fixture
def two_replicas(model_repository: Path, start_server: Start) -> list[ServerThread]:
    """Two ready in-process replicas with metrics; no repository polling to reset health."""
    replicas = [
        start_server(model_repository, metrics_port=0, watch=False, poll_interval=3600)
        for _ in range(2)
    ]
    for replica in replicas:
        with Client(replica.target) as client:
            client.wait_ready(60)
    return replicas


class Stream:
    """`threads` threads classifying through `client` until `stop()`; counts and keeps errors."""

    def __init__(self, client: Client, threads: int = 4) -> None:
        self._client, self._done = client, threading.Event()
        self._lock = threading.Lock()
        self.ok, self.in_flight, self.errors = 0, 0, list[BaseException]()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            with self._lock:
                self.in_flight += 1
            try:
                self._client.classify("gray", [PNG])
            except Exception as exc:  # every failure is kept for the assertion
                with self._lock:
                    self.errors.append(exc)
            else:
                with self._lock:
                    self.ok += 1
            finally:
                with self._lock:
                    self.in_flight -= 1

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(120)


def test_replica_lists_become_one_grpc_target() -> None:
    assert channel_target("127.0.0.1:1,127.0.0.1:2") == ("ipv4:127.0.0.1:1,127.0.0.1:2", True)
    assert channel_target("[::1]:1, [::1]:2") == ("ipv6:[::1]:1,[::1]:2", True)
    assert channel_target("localhost:7,127.0.0.1:8") == ("ipv4:127.0.0.1:7,127.0.0.1:8", True)
    assert channel_target("dns:///clfserve:8500") == ("dns:///clfserve:8500", True)
    assert channel_target("localhost:8500") == ("localhost:8500", False)
    for bad in ("127.0.0.1,127.0.0.1:2", "127.0.0.1:1,[::1]:2", "127.0.0.1:1,127.0.0.1:http"):
        with pytest.raises(ValueError):
            Client(bad)


def test_unresolvable_replica_names_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"'nowhere\.invalid:1': cannot resolve 'nowhere\.invalid'"
    ):
        channel_target("nowhere.invalid:1,127.0.0.1:2")  # .invalid never resolves (RFC 6761)


def test_only_a_replica_list_sets_the_authority_tls_checks() -> None:
    listed = dict(channel_options("localhost:1,127.0.0.1:2", True, 1024))
    assert listed["grpc.default_authority"] == "localhost:1"
    named = dict(channel_options("dns:///clfserve:8500", True, 1024))  # gRPC takes it from there
    assert "grpc.default_authority" not in named and named["grpc.enable_retries"] == 1


def test_calls_alternate_over_two_replicas(two_replicas: list[ServerThread]) -> None:
    a, b = two_replicas
    with Client(f"{a.target},{b.target}") as client:
        client.wait_ready(60)
        # Until both connections are up, round_robin can only pick the one that is.
        wait_for(lambda: bool(client.classify("gray", [PNG])) and min(map(served, (a, b))) > 0)
        before = [served(a), served(b)]
        for _ in range(20):
            assert client.classify("gray", [PNG]).version == 1
        # Both READY: round_robin alternates, so each answered exactly half.
        assert [served(a) - before[0], served(b) - before[1]] == [10, 10]


def test_not_serving_replica_gets_no_calls_until_serving_again(
    two_replicas: list[ServerThread],
) -> None:
    a, b = two_replicas
    with Client(f"{a.target},{b.target}") as client:
        client.wait_ready(60)
        wait_for(lambda: bool(client.classify("gray", [PNG])) and min(map(served, (a, b))) > 0)
        set_overall_health(a, health_pb2.HealthCheckResponse.NOT_SERVING)

        def two_in_a_row_on_b() -> bool:  # while both are picked, consecutive calls alternate
            start = served(b)
            client.classify("gray", [PNG])
            client.classify("gray", [PNG])
            return served(b) - start == 2

        wait_for(two_in_a_row_on_b, what="the client to see replica a's NOT_SERVING")
        before = [served(a), served(b)]
        for _ in range(20):
            client.classify("gray", [PNG])  # raises on any failure
        assert [served(a) - before[0], served(b) - before[1]] == [0, 20]

        set_overall_health(a, health_pb2.HealthCheckResponse.SERVING)
        wait_for(
            lambda: bool(client.classify("gray", [PNG])) and served(a) > before[0],
            what="replica a to be picked again",
        )


def test_tls_client_certificate_and_token_over_two_replicas(
    model_repository: Path, start_server: Start, tmp_path: Path
) -> None:
    ca = Authority("clfserve test CA")
    server_pair, client_pair = ca.issue("localhost", tmp_path / "s"), ca.issue("c", tmp_path / "c")
    ca_file = ca.write(tmp_path / "ca.pem")
    secured = {
        "tls_cert": server_pair.cert,
        "tls_key": server_pair.key,
        "tls_client_ca": ca_file,
        "auth_tokens": SecretStr("batch:s3cret"),
    }
    replicas = [start_server(model_repository, metrics_port=0, **secured) for _ in range(2)]
    target = ",".join(f"localhost:{replica.port}" for replica in replicas)  # names, resolved
    access = {"tls_ca": ca_file, "tls_cert": client_pair.cert, "tls_key": client_pair.key}
    with Client(target, token="s3cret", **access) as client:
        client.wait_ready(60)
        wait_for(
            lambda: bool(client.classify("gray", [PNG])) and min(map(served, replicas)) > 0,
            what="answers from both replicas over mutual TLS",
        )
    with Client(target, token="wrong", **access) as refused:
        refused.wait_ready(60)  # health stays open without --auth-health
        with pytest.raises(Unauthenticated):
            refused.classify("gray", [PNG])


def test_graceful_stop_mid_stream_fails_no_call(two_replicas: list[ServerThread]) -> None:
    a, b = two_replicas
    with Client(f"{a.target},{b.target}") as client:
        client.wait_ready(60)
        stream = Stream(client)
        try:
            wait_for(lambda: min(served(a), served(b)) >= 5, what="calls on both replicas")
            a.request_stop()  # SIGTERM's path: NOT_SERVING, refuse new calls, drain, exit
            assert a.join(60)
            after_stop = served(b)
            wait_for(lambda: served(b) >= after_stop + 20, what="calls after the stop")
        finally:
            stream.stop()
    assert stream.errors == [], stream.errors[:3]
    assert stream.ok > 0


def _start_replica(repository: Path, port_file: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "serve", "--repository", str(repository), "--host", "127.0.0.1",
        "--port", "0", "--port-file", str(port_file), "--metrics-port", "off", "--no-watch",
    ]  # fmt: skip
    return subprocess.Popen(command, env=cli_env(), stderr=subprocess.DEVNULL)


def unread_bytes(port: int) -> int:
    """Bytes that clients sent to 127.0.0.1:`port` and the server has not read yet."""
    total = 0
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]  # grpc listens dual-stack
    lines = [line for table in tables if table.exists() for line in table.read_text().splitlines()]
    for line in lines:
        fields = line.split()
        if fields[0] == "sl":  # each table's header
            continue
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "01" and int(local.split(":")[1], 16) == port:  # ESTABLISHED, server side
            total += int(queues.split(":")[1], 16)
    return total


@pytest.fixture
def killable(
    model_repository: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A clfserve subprocess replica (it can be stopped and killed); yields it and its port."""
    port_file = tmp_path / "port"
    process = _start_replica(model_repository, port_file)
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip() != "", 90)
        yield process, int(port_file.read_text())
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp (Linux)")
def test_replica_killed_with_calls_in_flight_fails_no_call(
    killable: tuple[subprocess.Popen[bytes], int], model_repository: Path, start_server: Start
) -> None:
    process, port = killable
    b = start_server(model_repository, metrics_port=0)
    with Client(f"127.0.0.1:{port},{b.target}", timeout=60) as client:
        client.wait_ready(90)
        with Client(f"127.0.0.1:{port}") as only_a:
            only_a.wait_ready(90)
        stream = Stream(client)
        try:
            wait_for(lambda: stream.ok >= 20 and served(b) >= 5, what="calls on both replicas")
            # Frozen, replica a reads nothing: calls picked for it wait in its socket.
            os.kill(process.pid, signal.SIGSTOP)
            wait_for(lambda: unread_bytes(port) > 0, what="calls sent to the frozen replica")
            in_flight = stream.in_flight
            os.kill(process.pid, signal.SIGKILL)  # its connections reset: those calls are cut
            process.wait()
            after_kill = served(b)
            wait_for(lambda: served(b) >= after_kill + 20, what="calls after the kill")
        finally:
            stream.stop()
    assert in_flight >= 1
    # The cut calls got UNAVAILABLE before any answer: the retry policy sent them to b.
    assert stream.errors == [], stream.errors[:3]


@pytest.mark.slow
def test_clfbatch_run_over_two_replicas_writes_one_servers_report(
    two_replicas: list[ServerThread], tmp_path: Path
) -> None:
    a, b = two_replicas
    folder = tmp_path / "images"
    write_rgb_folder(folder)
    reports, served = {}, {}
    for name, server in (("one", a.target), ("two", f"{a.target},{b.target}")):
        before = [metric(r, "clfserve_requests_total", model="rgb", version="1", code="OK")
                  for r in (a, b)]  # fmt: skip
        result = run_cli(
            "run", folder, "--model", "rgb", "--server", server, "--batch-size", "2",
            "--out", tmp_path / f"{name}.csv", "-q", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        reports[name] = (tmp_path / f"{name}.csv").read_text()
        after = [metric(r, "clfserve_requests_total", model="rgb", version="1", code="OK")
                 for r in (a, b)]  # fmt: skip
        served[name] = [x - y for x, y in zip(after, before, strict=True)]
    assert reports["one"] == reports["two"]
    # The same requests, answered by the replica set (how they spread depends on when the second
    # connection becomes ready: test_calls_alternate_over_two_replicas shows the spreading).
    assert sum(served["two"]) == sum(served["one"]) > 0, served
    result = run_cli("run", folder, "-m", "rgb", "--server", "127.0.0.1,127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 2 and "HOST:PORT" in result.stderr, result.stderr
