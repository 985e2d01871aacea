#!/usr/bin/env python
"""One clfserve replica against two behind the client's round_robin, then a replica killed.

    python scripts/bench_replicas.py [--model mnist] [--seconds 4] [--threads 8]

Starts two clfserve subprocesses on loopback, each serving the newest version of `--model`
(copied from `--repository` into a temporary repository). The same load, `--threads` threads
calling `serve.client.Client.classify` in a loop with one encoded PNG per request (the server
decodes, resizes and batches), drives:

1. one replica, `Client("A")`;
2. two replicas, `Client("A,B")`: round_robin with health checking, retries on UNAVAILABLE;
3. two replicas, replica B SIGKILLed halfway: failed requests with the retry policy;
4. the same kill with a channel that balances and health-checks but has no retry policy.

It prints requests/s, p50/p99 latency, the replicas' CPU per request and the failures. All of it
runs on one machine: with fewer cores than two replicas and the load generator need, a second
replica adds processes competing for the same cores, so expect overhead, not speed-up; the run
shows what balancing costs and what the retry policy saves, not how far replicas scale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from servebench.processes import Server, wait_ready  # noqa: E402

from serve.client import Client, build_request  # noqa: E402
from serve.grpc import clf_pb2_grpc  # noqa: E402
from serve.replicas import SERVICE_CONFIG, channel_target  # noqa: E402
from serve.repository import resolve  # noqa: E402

Call = Callable[[], object]


@dataclass
class Tally:
    answered: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def line(self, name: str, cpu: float) -> str:
        ms = np.percentile(self.latencies, [50, 99]) * 1000 if self.latencies else [0.0, 0.0]
        rate = self.answered / self.elapsed if self.elapsed else 0.0
        per = cpu / self.answered * 1000 if self.answered else float("nan")
        failed = sum(self.failed.values())
        return (
            f"{name:<34} {rate:8.1f} {ms[0]:7.1f} {ms[1]:7.1f} {per:10.2f} {self.answered:9d}"
            f" {failed:7d}"
        )


def reason(exc: Exception) -> str:
    """A failure's status and the first words of its details, on one line."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        text = f"{exc.code().name}: {exc.details()}"
    else:
        text = str(exc)
    return " ".join(text.split())[:70]


def drive(call: Call, threads: int, seconds: float, halfway: Call | None = None) -> Tally:
    """`threads` callers loop over `call` for `seconds`; `halfway()` runs once in between."""
    tally, lock = Tally(), threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                call()
            except Exception as exc:  # every failure is counted, by its reason
                with lock:
                    tally.failed[reason(exc)] += 1
            else:
                with lock:
                    tally.answered += 1
                    tally.latencies.append(time.perf_counter() - start)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    if halfway is not None:
        time.sleep(seconds / 2)
        halfway()
    for worker in workers:
        worker.join()
    tally.elapsed = time.monotonic() - began
    return tally


def start_replica(name: str, repository: Path, model: str, work: Path) -> Server:
    port_file = work / f"{name}.port"
    port_file.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "serve", "--repository", str(repository), "--host", "127.0.0.1",
        "--port", "0", "--port-file", str(port_file), "--metrics-port", "off", "--no-watch",
        "--log-level", "WARNING",
    ]  # fmt: skip
    server = Server(name, command, port_file, ROOT)
    wait_ready(server.target, [model])
    return server


def without_retries(target: str, model: str, image: bytes) -> tuple[grpc.Channel, Call]:
    """A channel balancing and health-checking like `Client`'s, but with no retry policy."""
    address, _ = channel_target(target)
    config = {key: value for key, value in SERVICE_CONFIG.items() if key != "methodConfig"}
    options = [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 0)]
    channel = grpc.insecure_channel(address, options=options)
    stub = clf_pb2_grpc.ClassificationServiceStub(channel)
    request = build_request(model, [image])
    return channel, lambda: stub.Classify(request, timeout=30)


def noise_png(shape: tuple[int, ...]) -> bytes:
    import io

    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (*shape[:2], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measured point")
    parser.add_argument("--threads", type=int, default=8, help="concurrent callers")
    args = parser.parse_args()

    version = resolve(args.repository, args.model, None)
    image = noise_png(tuple(version.manifest.input_shape))
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        repository = work / "repository"
        shutil.copytree(version.path, repository / args.model / str(version.version))
        replicas = [start_replica(n, repository, args.model, work) for n in ("A", "B")]
        a, b = replicas
        rows: list[str] = []

        def measure(name: str, call: Call, halfway: Call | None = None) -> Tally:
            drive(call, args.threads, 1.0)  # warm-up: connections, health watches, batchers
            cpu = [r.cpu_seconds() if r.process.poll() is None else 0.0 for r in replicas]
            tally = drive(call, args.threads, args.seconds, halfway)
            alive = all(r.process.poll() is None for r in replicas)  # a killed one: unknown
            used = sum(r.cpu_seconds() for r in replicas) - sum(cpu) if alive else float("nan")
            rows.append(tally.line(name, used))
            for reason, count in tally.failed.items():
                rows.append(f"    failed {count}: {reason}")
            return tally

        def kill_b() -> None:
            os.kill(b.process.pid, signal.SIGKILL)
            b.process.wait()

        try:
            with Client(a.target) as one:
                measure("1 replica", lambda: one.classify(args.model, [image]))
            with Client(f"{a.target},{b.target}") as two:
                measure("2 replicas, round_robin", lambda: two.classify(args.model, [image]))
            with Client(f"{a.target},{b.target}") as two:
                measure("2, B killed halfway, retries", lambda: two.classify(args.model, [image]),
                        kill_b)  # fmt: skip
            b = replicas[1] = start_replica("B", repository, args.model, work)
            channel, call = without_retries(f"{a.target},{b.target}", args.model, image)
            with channel:
                measure("2, B killed halfway, no retries", call, kill_b)
        finally:
            for replica in replicas:
                replica.stop()
    print(
        f"\n{args.model} v{version.version}, 1 PNG per request, {args.threads} threads, "
        f"{args.seconds:g} s per point after 1 s of warm-up, replicas and load on loopback\n"
    )
    print(f"{'':<34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} "
          f"{'answered':>9} {'failed':>7}")  # fmt: skip
    print("\n".join(rows))
    print(f"\nload average at end: {os.getloadavg()}, {os.cpu_count()} cores")
    print(
        "One machine: both replicas and the load generator share its cores, so a second "
        "replica\nshows the cost of balancing (overhead), not the speed-up of a second machine."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
