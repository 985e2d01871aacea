"""The load generator: tritonclient's asyncio client over KServe v2 `ModelInfer`, in a process.

    python scripts/bench_serve.py --drive '{"target": "127.0.0.1:8500", "model": "mnist", ...}'

prints one JSON line: requests answered, errors by status code, elapsed seconds and the latency
percentiles of the answered requests. Every server is driven by the same code with the same
inputs (seeded random FP32 model inputs), `concurrency` callers each looping for `seconds`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parent.parent / "bench_serve.py"


@dataclass(frozen=True)
class Load:
    target: str
    model: str
    input_name: str
    output_name: str
    shape: tuple[int, ...]  # [images per request, H, W, C]
    concurrency: int
    seconds: float
    timeout: float = 30.0


@dataclass(frozen=True)
class Outcome:
    answered: int
    errors: dict[str, int]
    elapsed: float
    p50: float
    p99: float

    @property
    def rate(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0


async def _drive(load: Load) -> Outcome:
    from tritonclient.grpc import InferInput, InferRequestedOutput
    from tritonclient.grpc.aio import InferenceServerClient
    from tritonclient.utils import InferenceServerException

    batch = np.random.default_rng(0).random(load.shape, dtype=np.float32)
    tensor = InferInput(load.input_name, list(load.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    outputs = [InferRequestedOutput(load.output_name)]
    client = InferenceServerClient(load.target)
    for _ in range(3):  # connect and warm up
        await client.infer(load.model, [tensor], outputs=outputs, client_timeout=load.timeout)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    stop_at = time.perf_counter() + load.seconds

    async def caller() -> None:
        while (start := time.perf_counter()) < stop_at:
            try:
                await client.infer(
                    load.model, [tensor], outputs=outputs, client_timeout=load.timeout
                )
            except InferenceServerException as exc:
                errors[str(exc.status())] += 1
                continue
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(load.concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2
    return Outcome(len(latencies), dict(errors), elapsed, float(p50), float(p99))


def main(spec: str) -> None:
    """Entry point of the load process: `spec` is a JSON `Load`; prints a JSON `Outcome`."""
    fields = json.loads(spec)
    fields["shape"] = tuple(fields["shape"])
    print(json.dumps(asdict(asyncio.run(_drive(Load(**fields))))))


def drive(load: Load) -> Outcome:
    """Run `load` in a fresh process (so the client never shares a GIL with what it measures)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--drive", json.dumps(asdict(load))],
        capture_output=True, text=True, timeout=load.seconds + 120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"load generator failed:\n{done.stderr[-2000:]}")
    return Outcome(**json.loads(done.stdout.strip().splitlines()[-1]))
