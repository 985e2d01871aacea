"""What HTTP costs: the same mnist request over gRPC and over the REST port, one clfserve.

    python scripts/servebench/rest.py [--seconds 5] [--concurrency 1,16]     # standalone
    from servebench.rest import print_rest, rest_scenarios                      # from bench_serve
    print_rest(rest_scenarios(bench, seconds=10))

Kinds, each driven by its own load process (`concurrency` callers looping for `seconds`):
  grpc-fp32    KServe v2 gRPC, FP32 model input            (tritonclient.grpc.aio)
  v2-binary    KServe v2 REST, FP32 as binary tensor data  (tritonclient.http.aio)
  v2-json      KServe v2 REST, FP32 as JSON numbers        (tritonclient.http.aio)
  grpc-png     KServe v2 gRPC, the PNG as BYTES            (tritonclient.grpc.aio)
  upload-png   POST /v1/models/mnist/classify, the PNG as the raw body (aiohttp)
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("grpc-fp32", "v2-binary", "v2-json", "grpc-png", "upload-png")


@dataclass(frozen=True)
class RestLoad:
    kind: str
    grpc: str  # host:port
    rest: str  # host:port
    model: str
    shape: tuple[int, ...]  # the model input [1, H, W, C]
    concurrency: int
    seconds: float


def _png(shape: tuple[int, ...]) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, shape[1:3], dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def _caller(load: RestLoad) -> tuple[Any, Any]:
    """(an async function making one request, a closer) for `load.kind`."""
    batch = np.random.default_rng(0).random(load.shape, dtype=np.float32)
    png = _png(load.shape)
    if load.kind.startswith("grpc"):
        from tritonclient.grpc import InferInput
        from tritonclient.grpc.aio import InferenceServerClient

        client = InferenceServerClient(load.grpc)
        if load.kind == "grpc-fp32":
            tensor = InferInput("images", list(load.shape), "FP32")
            tensor.set_data_from_numpy(batch)
        else:
            tensor = InferInput("images_bytes", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([png], dtype=np.object_))
        return (lambda: client.infer(load.model, [tensor])), client.close
    if load.kind.startswith("v2"):
        import tritonclient.http as http
        from tritonclient.http.aio import InferenceServerClient as HttpClient

        client = HttpClient(load.rest, conn_limit=load.concurrency)
        tensor = http.InferInput("images", list(load.shape), "FP32")
        binary = load.kind == "v2-binary"
        tensor.set_data_from_numpy(batch, binary_data=binary)
        outputs = [http.InferRequestedOutput("probabilities", binary_data=binary)]
        return (lambda: client.infer(load.model, [tensor], outputs=outputs)), client.close
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=load.concurrency))
    url = f"http://{load.rest}/v1/models/{load.model}/classify?top_k=1"

    async def upload() -> None:
        headers = {"Content-Type": "image/png"}
        async with session.post(url, data=png, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(str(response.status))

    return upload, session.close


async def _drive(load: RestLoad) -> dict[str, Any]:
    call, close = await _caller(load)
    for _ in range(3):  # connect and warm up
        await call()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    stop_at = time.perf_counter() + load.seconds

    async def caller() -> None:
        while (start := time.perf_counter()) < stop_at:
            try:
                await call()
            except Exception as exc:  # any failure counts, by type
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(load.concurrency)))
    elapsed = time.perf_counter() - started
    await close()
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2
    return {"answered": len(latencies), "errors": dict(errors), "elapsed": elapsed,
            "p50": float(p50), "p99": float(p99)}  # fmt: skip


def drive(load: RestLoad) -> dict[str, Any]:
    """Run `load` in a fresh process (the client never shares a GIL with the server)."""
    done = subprocess.run(
        [sys.executable, __file__, "--drive", json.dumps(asdict(load))],
        capture_output=True, text=True, timeout=load.seconds + 120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"REST load generator failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def rest_scenarios(
    bench: Any, seconds: float, concurrency: tuple[int, ...] = (1, 16), model: str = "mnist"
) -> list[tuple[str, int, dict[str, Any], float]]:
    """(kind, concurrency, outcome, server CPU ms per request) for every kind, one clfserve."""
    port_file = bench.scratch / "rest.port"
    port_file.unlink(missing_ok=True)
    process = bench.start("clfserve", ["--no-watch", "--rest-port", "0",
                                       "--rest-port-file", str(port_file)])  # fmt: skip
    rest = f"127.0.0.1:{port_file.read_text().strip()}"
    shape = bench.load(process.target, model, 1, 1, seconds).shape
    rows = []
    try:
        for kind in KINDS:
            for callers in concurrency:
                cpu = process.cpu_seconds()
                load = RestLoad(kind, process.target, rest, model, shape, callers, seconds)
                outcome = drive(load)
                cpu = (process.cpu_seconds() - cpu) * 1e3 / max(1, outcome["answered"])
                rows.append((kind, callers, outcome, cpu))
    finally:
        process.stop()
    return rows


def print_rest(rows: list[tuple[str, int, dict[str, Any], float]]) -> None:
    print(f"{'kind':<11} {'conc':>4} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU ms/req':>10} {'errors':>6}")  # fmt: skip
    for kind, callers, o, cpu in rows:
        rate = o["answered"] / o["elapsed"] if o["elapsed"] else 0.0
        print(f"{kind:<11} {callers:>4} {rate:>7.0f} {o['p50'] * 1e3:>7.2f} "
              f"{o['p99'] * 1e3:>7.2f} {cpu:>10.3f} {sum(o['errors'].values()):>6}")  # fmt: skip


def main() -> int:
    import argparse
    import os
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--version", default="1", help="mnist version")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        fields = json.loads(args.drive)
        fields["shape"] = tuple(fields["shape"])
        print(json.dumps(asyncio.run(_drive(RestLoad(**fields)))))
        return 0
    from servebench.runs import Bench

    versions = {"mnist": args.repository / "mnist" / args.version}
    bench = Bench(versions, Path(tempfile.mkdtemp(prefix="bench-rest-")), [])
    print(f"bench REST: mnist v{args.version}, {args.seconds:g} s per point, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    levels = tuple(int(c) for c in args.concurrency.split(","))
    print_rest(rest_scenarios(bench, args.seconds, levels))
    return 0


ROOT = Path(__file__).resolve().parent.parent.parent
if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    sys.exit(main())
