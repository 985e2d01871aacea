"""What the benchmark runs: each server over the scenarios, the overload run and the soak run."""

from __future__ import annotations

import re
import shutil
import socket
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from servebench.limits import InProcess
from servebench.load import Load, Outcome, drive
from servebench.processes import Server, wait_ready
from servebench.report import Row

Scenario = tuple[str, int, int]  # (model, images per request, concurrency)
SCRIPT = Path(__file__).resolve().parent.parent / "bench_serve.py"
ROOT = SCRIPT.parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _batch_totals(metrics_port: int, model: str) -> tuple[float, float]:
    """(images, model calls) clfserve has batched for `model` so far, from its /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()

    def total(kind: str) -> float:
        pattern = rf'^clfserve_batch_size_{kind}\{{model="{model}",.*\}} (\S+)$'
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    return total("sum"), total("count")


class Bench:
    """Starts the servers on the given model versions and measures them."""

    def __init__(self, versions: dict[str, Path], scratch: Path, serve_args: list[str]) -> None:
        self.versions = versions
        self.scratch = scratch
        self.serve_args = serve_args
        self.repository = scratch / "repository"
        for name, path in versions.items():  # a repository holding just these versions
            (self.repository / name).mkdir(parents=True, exist_ok=True)
            (self.repository / name / path.name).symlink_to(path.resolve())
        self._inprocess: dict[str, InProcess] = {}

    def load(self, target: str, model: str, images: int, concurrency: int, seconds: float) -> Load:
        from serve.manifest import Manifest

        manifest = Manifest.read(self.versions[model] / "manifest.json")
        return Load(target, model, manifest.signature.input, manifest.signature.output,
                    (images, *manifest.input_shape), concurrency, seconds)  # fmt: skip

    def start(
        self, server: str, extra: list[str] = (), repository: Path | None = None,
        models: list[str] | None = None,
    ) -> Server:  # fmt: skip
        port_file = self.scratch / f"{server}.port"
        port_file.unlink(missing_ok=True)
        if server == "clfserve":
            self.metrics_port = _free_port()
            command = [
                sys.executable, "-m", "serve", "--repository", str(repository or self.repository),
                "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
                "--metrics-port", str(self.metrics_port), "--log-level", "WARNING",
                *self.serve_args, *extra,
            ]  # fmt: skip
            process = Server(server, command, port_file, ROOT)
            try:
                wait_ready(process.target, models or list(self.versions))
            except BaseException:
                process.stop()
                raise
            return process
        pairs = [f"{name}={path}" for name, path in self.versions.items()]
        command = [sys.executable, str(SCRIPT), "--baseline", server, str(port_file), *pairs]
        return Server(server, command, port_file, ROOT)

    def scenarios(
        self, servers: list[str], scenarios: list[Scenario], seconds: float, rounds: int = 1
    ) -> list[Row]:
        """Every server started at once (each idle while another is measured); each scenario
        measured on every server back to back (after a one-second warm-up of each), `rounds`
        times over. Per server and scenario, the round with the median rate, carrying every
        round's rate: this machine's speed drifts by tens of percent within minutes, and
        back-to-back rounds keep the ratios comparable."""
        processes: dict[str, Server] = {}
        measured: dict[tuple[str, Scenario], list[Row]] = {}
        try:
            for server in servers:
                extra = ["--no-watch"] if server == "clfserve" else []
                processes[server] = self.start(server, extra)
            for scenario in scenarios:  # warm-up, not kept: LiteRT plans a new batch size once
                for server in servers:
                    self._measure(server, processes[server], scenario, min(1.0, seconds))
            for _ in range(rounds):
                for scenario in scenarios:
                    for server in servers:
                        row = self._measure(server, processes[server], scenario, seconds)
                        measured.setdefault((server, scenario), []).append(row)
        finally:
            for process in processes.values():
                process.stop()
        rows = []
        for server in servers:
            for scenario in scenarios:
                runs = sorted(measured[server, scenario], key=lambda r: r.outcome.rate)
                rates = tuple(r.outcome.rate for r in measured[server, scenario])
                rows.append(replace(runs[(len(runs) - 1) // 2], rates=rates))
        return rows

    def _measure(self, server: str, process: Server, scenario: Scenario, seconds: float) -> Row:
        model, images, concurrency = scenario
        batched = _batch_totals(self.metrics_port, model) if server == "clfserve" else None
        cpu = process.cpu_seconds()
        outcome = drive(self.load(process.target, model, images, concurrency, seconds))
        cpu = process.cpu_seconds() - cpu
        formed = float(images)
        if batched is not None:
            after = _batch_totals(self.metrics_port, model)
            formed = (after[0] - batched[0]) / max(1.0, after[1] - batched[1])
        return Row(server, model, images, concurrency, outcome,
                   cpu / max(1, outcome.answered), formed)  # fmt: skip

    def inprocess(self, model: str) -> InProcess:
        if model not in self._inprocess:
            self._inprocess[model] = InProcess(self.versions[model])
        return self._inprocess[model]

    def limits(self, rows: list[Row], seconds: float) -> dict[tuple[str, int], tuple[float, float]]:
        """(images/s, p50) of the bare model at every batch size a row needs."""
        wanted = {(r.model, 1) for r in rows} | {(r.model, r.images) for r in rows}
        wanted |= {(r.model, max(1, round(r.formed))) for r in rows}
        return {
            key: self.inprocess(key[0]).measure(key[1], min(seconds, 3.0)) for key in sorted(wanted)
        }


def overload(bench: Bench, seconds: float) -> tuple[Outcome, Outcome]:
    """Concurrency 256 against `--queue-bound 64`, then concurrency 1 right after."""
    process = bench.start("clfserve", ["--no-watch", "--queue-bound", "64"])
    try:
        heavy = drive(bench.load(process.target, "mnist", 1, 256, seconds))
        after = drive(bench.load(process.target, "mnist", 1, 1, min(seconds, 3.0)))
    finally:
        process.stop()
    return heavy, after


def soak(bench: Bench, seconds: float, every: float = 120.0) -> None:
    """Concurrency 16 for `seconds` with a new version every `every` s; RSS and failures."""
    model, source = "mnist", bench.versions["mnist"]
    repository = bench.scratch / "soak"
    shutil.copytree(source, repository / model / "1", symlinks=False)
    process = bench.start(
        "clfserve", ["--poll-interval", "2"], repository=repository, models=[model]
    )
    try:
        warm = drive(bench.load(process.target, model, 1, 16, min(30.0, seconds / 10)))
        start_rss, answered, failed, version = process.rss_mb(), warm.answered, 0, 1
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 1:
            outcome = drive(bench.load(process.target, model, 1, 16, min(every, left)))
            answered += outcome.answered
            failed += sum(outcome.errors.values())
            version += 1
            staging = repository / model / f".tmp-{version}"
            shutil.copytree(source, staging)
            staging.rename(repository / model / str(version))
            print(f"  {time.strftime('%H:%M:%S')} {outcome.rate:.0f} req/s, "
                  f"{sum(outcome.errors.values())} failed, RSS {process.rss_mb():.0f} MB; "
                  f"added version {version}", flush=True)  # fmt: skip
        end_rss = process.rss_mb()
    finally:
        process.stop()
    growth = end_rss / start_rss - 1
    print(f"soak: {seconds:g} s at concurrency 16, {version - 1} hot reloads, {answered} answered, "
          f"{failed} failed; RSS after warm-up {start_rss:.0f} MB, at the end {end_rss:.0f} MB "
          f"({growth:+.1%}; goal < 5% and 0 failed: "
          f"{'met' if growth < 0.05 and failed == 0 else 'missed'})")  # fmt: skip
