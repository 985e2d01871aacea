"""Server processes for the benchmark: start one, wait for its port, read its CPU time and RSS."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess that writes its bound port to `port_file` once it listens."""

    def __init__(self, name: str, command: list[str], port_file: Path, cwd: Path) -> None:
        self.name = name
        self.process = subprocess.Popen(command, cwd=cwd, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{name} did not start: {' '.join(command)}")
            time.sleep(0.1)
        self.target = f"127.0.0.1:{port_file.read_text().strip()}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread of the process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_ready(target: str, models: list[str], timeout: float = 180.0) -> None:
    """Wait until every model answers `ModelReady` (clfserve listens before it has loaded)."""
    import grpc

    from serve.grpc import grpc_service_pb2 as pb
    from serve.grpc import grpc_service_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for model in models:
            while not stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=10).ready:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{model} never became ready on {target}")
                time.sleep(0.2)
