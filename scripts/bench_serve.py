#!/usr/bin/env python
"""Benchmark clfserve against the RPC floor and the bare model, measured in the same run.

    python scripts/bench_serve.py --seconds 5          # `make bench-serve`

Starts clfserve on the shipped models (`trained/`) in a subprocess and drives it with an async
gRPC client at concurrency 1, 16 and 64, with 1 and with 32 images per request (encoded PNGs).
The same load then goes to (a) a bare grpc.aio echo server in its own process that answers
every ClassifyRequest with a ready-made ClassifyResponse of the same size (the RPC floor), and
(b) the model in this process (decode + preprocess + predict) at the batch size clfserve actually
formed (read from its /metrics). Goals: concurrency 64 at >= 70% of the echo rate; p50 at
concurrency 1 <= echo p50 + 1.5 x the in-process batch-1 time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402

from serve.client import build_request  # noqa: E402
from serve.grpc import clf_pb2 as pb  # noqa: E402
from serve.grpc import clf_pb2_grpc  # noqa: E402

CONCURRENCY = (1, 16, 64)
IMAGES = (1, 32)


def images_for(manifest_path: Path, count: int) -> list[bytes]:
    """Synthetic PNGs of the model's input size and colour mode (never a dataset image)."""
    from serve.manifest import Manifest

    pre = Manifest.read(manifest_path).preprocessing
    rng = np.random.default_rng(0)
    shape = pre.size if pre.channels == 1 else (*pre.size, 3)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


# -- the echo server (a subprocess: `bench_serve.py --echo PORTFILE CLASSES`) ----------------
async def echo_server(port_file: Path, classes: int) -> None:
    replies: dict[int, bytes] = {}

    def reply(n: int) -> bytes:
        if n not in replies:
            message = pb.ClassifyResponse(labels=[str(i) for i in range(classes)])
            message.model_spec.name, message.model_spec.version = "echo", 1
            for _ in range(n):
                entry = message.results.add(probabilities=[1.0 / classes] * classes)
                entry.top_k.add(label="0", score=1.0 / classes)
            replies[n] = message.SerializeToString()
        return replies[n]

    async def classify(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return reply(len(pb.ClassifyRequest.FromString(request).inputs))

    handler = grpc.method_handlers_generic_handler(
        "clf.v1.ClassificationService",
        {"Classify": grpc.unary_unary_rpc_method_handler(classify)},
    )
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


# -- load -------------------------------------------------------------------------------------
async def drive(target: str, request: pb.ClassifyRequest, concurrency: int, seconds: float):
    """(requests/s, p50 s, p99 s) of `concurrency` callers looping for `seconds`."""
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = clf_pb2_grpc.ClassificationServiceStub(channel)
        for _ in range(3):
            await stub.Classify(request, timeout=30)  # warm the connection
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def caller() -> None:
            while (now := time.perf_counter()) < stop_at:
                await stub.Classify(request, timeout=30)
                latencies.append(time.perf_counter() - now)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    p50, p99 = np.percentile(latencies, [50, 99])
    return len(latencies) / elapsed, float(p50), float(p99)


def batch_stats(metrics_url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    total = sum(float(v) for v in re.findall(r"^clfserve_batch_size_sum\{.*\} (\S+)$", text, re.M))
    count = sum(
        float(v) for v in re.findall(r"^clfserve_batch_size_count\{.*\} (\S+)$", text, re.M)
    )
    return total, count


def in_process_seconds(version_dir: Path, images: list[bytes], batch: int, seconds: float) -> float:
    """Seconds per call of decode + preprocess + predict for `batch` images, in this process."""
    from serve.loader import load
    from serve.preprocess import preprocess_bytes
    from serve.repository import read_version

    version = read_version(version_dir.parent.name, int(version_dir.name), version_dir)
    model = load(version)
    pre = version.manifest.preprocessing
    chosen = (images * (batch // len(images) + 1))[:batch]
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        model.predict(np.stack([preprocess_bytes(b, pre) for b in chosen]))
        calls += 1
    return (time.perf_counter() - started) / calls


def start(command: list[str], port_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (port_file.exists() and port_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{command[2]} did not start")
        time.sleep(0.1)
    return process, f"127.0.0.1:{port_file.read_text().strip()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--echo", nargs=2, metavar=("PORT_FILE", "CLASSES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        asyncio.run(echo_server(Path(args.echo[0]), int(args.echo[1])))
        return 0
    versions = sorted((p for p in (args.repository / args.model).glob("[0-9]*") if p.is_dir()),
                      key=lambda p: int(p.name))  # fmt: skip
    if not versions:
        raise SystemExit(f"no versions of {args.model} under {args.repository}")
    newest = versions[-1]
    from serve.manifest import Manifest

    classes = len(Manifest.read(newest / "manifest.json").classes)
    images = images_for(newest / "manifest.json", 32)
    scratch = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    metrics_port = free_port()
    serve_cmd = [
        sys.executable, "-m", "serve", "--repository", str(args.repository), "--host", "127.0.0.1",
        "--port", "0", "--port-file", str(scratch / "serve"), "--metrics-port", str(metrics_port),
        "--no-watch", "--log-level", "WARNING",
    ]  # fmt: skip
    echo_cmd = [sys.executable, __file__, "--echo", str(scratch / "echo"), str(classes)]
    server, serve_target = start(serve_cmd, scratch / "serve")
    echo, echo_target = start(echo_cmd, scratch / "echo")
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    rows = []
    try:
        for n in IMAGES:
            request = build_request(args.model, images[:n])
            for concurrency in CONCURRENCY:
                before = batch_stats(metrics_url)
                served = asyncio.run(drive(serve_target, request, concurrency, args.seconds))
                after = batch_stats(metrics_url)
                floor = asyncio.run(drive(echo_target, request, concurrency, args.seconds))
                batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
                rows.append((n, concurrency, served, floor, batch))
    finally:
        for process in (server, echo):
            process.terminate()
            process.wait(30)
    model_time = {1: in_process_seconds(newest, images, 1, args.seconds)}
    for *_, batch in rows:
        size = max(1, round(batch))
        if size not in model_time:
            model_time[size] = in_process_seconds(newest, images, size, args.seconds)
    report(args, newest, rows, model_time)
    return 0


def report(
    args: argparse.Namespace, newest: Path, rows: list, model_time: dict[int, float]
) -> None:
    print(f"clfserve benchmark: {args.model} version {newest.name}, {args.seconds:g} s per point, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    head = (f"{'img/req':>7} {'conc':>4} {'req/s':>8} {'img/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'echo req/s':>10} {'echo p50':>8} {'vs echo':>7} {'batch':>5} "
            f"{'model img/s':>11} {'vs model':>8}")  # fmt: skip
    print(head)
    for n, concurrency, (rate, p50, p99), (echo_rate, echo_p50, _), batch in rows:
        size = max(1, round(batch))
        model_rate = size / model_time[size]
        print(f"{n:>7} {concurrency:>4} {rate:>8.0f} {rate * n:>8.0f} {p50 * 1e3:>7.2f} "
              f"{p99 * 1e3:>7.2f} {echo_rate:>10.0f} {echo_p50 * 1e3:>8.2f} "
              f"{rate / echo_rate:>7.0%} {batch:>5.1f} {model_rate:>11.0f} "
              f"{rate * n / model_rate:>8.0%}")  # fmt: skip
    by_key = {(n, c): (s, f) for n, c, s, f, _ in rows}
    served64, echo64 = by_key[(1, 64)]
    served1, echo1 = by_key[(1, 1)]
    budget = echo1[1] + 1.5 * model_time[1]
    print(
        f"goal: concurrency 64 at >= 70% of echo: {served64[0] / echo64[0]:.0%} "
        f"({'met' if served64[0] >= 0.7 * echo64[0] else 'missed'})"
    )
    print(
        f"goal: p50 at concurrency 1 <= echo p50 + 1.5 x model batch-1 time = "
        f"{echo1[1] * 1e3:.2f} + 1.5 x {model_time[1] * 1e3:.2f} = {budget * 1e3:.2f} ms: "
        f"{served1[1] * 1e3:.2f} ms ({'met' if served1[1] <= budget else 'missed'})"
    )


if __name__ == "__main__":
    sys.exit(main())
