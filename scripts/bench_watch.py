#!/usr/bin/env python
"""`make bench-watch`: `clfbatch watch` under a burst and under a steady trickle.

1. Burst: N images (the CIFAR-10 test split, unpacked once from ../shared/datasets into the
   cache; synthetic images when the archive is absent) are renamed into the inbox of a running,
   warmed daemon all at once; throughput is N / (first rename -> N-th report row), compared with
   `clfbatch run` on the same files (its own images/s, start-up excluded in both).
2. Steady: 10 files/s for `--seconds`; latency of each file from its close (after the write) to
   the moment its row can be read in the report; p50 / p99.

Both run the daemon and `clfbatch run` as subprocesses, as users do.

    .venv/bin/python scripts/bench_watch.py [--limit 10000] [--seconds 30] [--model cifar10]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10.tar.gz"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))


def dataset_files(
    archive: Path, limit: int, shape: tuple[int, int, int]
) -> list[tuple[str, bytes]]:
    """(name, bytes) of `limit` test images, or synthetic PNGs of the model's input shape."""
    if archive.is_file():
        from training.data import extract_archive, find_root

        test = find_root(extract_archive(archive)) / "test"
        paths = sorted(p for p in test.rglob("*") if p.is_file())
        paths = random.Random(0).sample(paths, min(limit, len(paths)))
        return [(f"{p.parent.name}_{p.name}", p.read_bytes()) for p in paths]
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for index in range(limit):
        pixels = rng.integers(0, 255, shape, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels.squeeze()).save(buffer, format="PNG")
        files.append((f"synthetic_{index:05d}.png", buffer.getvalue()))
    return files


class Daemon:
    def __init__(self, inbox: Path, out: Path, args: list[str], log: Path) -> None:
        self.log = log
        command = [sys.executable, "-m", "batch", "watch", str(inbox), "--out", str(out), *args]
        with log.open("w") as handle:
            self.process = subprocess.Popen(command, env=ENV, stdout=handle, stderr=handle)
        deadline = time.monotonic() + 300
        while "watching " not in log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench-watch: the daemon did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        if self.process.wait(120) != 0:
            sys.exit(f"bench-watch: the daemon exited {self.process.returncode}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ReportTail:
    """Reads rows as they are appended; remembers when each path's row was first readable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.header: list[str] | None = None
        self.seen: dict[str, float] = {}

    def poll(self) -> int:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return 0
        now = time.time()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for record in csv.reader(io.StringIO(complete.decode())):
            if self.header is None:
                self.header = record
                continue
            self.seen.setdefault(record[self.header.index("path")], now)
        return len(self.seen)

    def wait(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.poll() < count:
            if time.monotonic() > deadline:
                sys.exit(f"bench-watch: {len(self.seen)} of {count} rows after {timeout} s")
            time.sleep(0.005)
        return time.time()


def clfbatch_run(folder: Path, report: Path, chosen: list[str]) -> float:
    """`clfbatch run`'s own images/s (from its summary line) on the same files; `chosen`: the
    --model/--repository/--version-label flags the daemon gets too."""
    command = [sys.executable, "-m", "batch", "run", str(folder), *chosen]
    command += ["--out", str(report), "--labels", "none"]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, check=False)
    match = re.search(r"([\d,]+) images/s", done.stdout)
    if done.returncode != 0 or match is None:
        sys.exit(f"bench-watch: clfbatch run failed:\n{done.stdout}\n{done.stderr}")
    return float(match.group(1).replace(",", ""))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--limit", type=int, default=10_000, help="images in the burst")
    parser.add_argument("--seconds", type=float, default=30.0, help="steady phase length")
    parser.add_argument("--rate", type=float, default=10.0, help="steady files per second")
    parser.add_argument("--model", default="cifar10")
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--version-label", help="e.g. fast (default: the default version)")
    parser.add_argument("--daemon-args", default="", help="extra options for clfbatch watch")
    parser.add_argument("--log", type=Path, help="keep the daemon's log in this file")
    args = parser.parse_args()
    from serve.errors import ServeError
    from serve.repository import resolve

    try:
        version = resolve(args.repository, args.model, label=args.version_label)
    except ServeError as exc:
        sys.exit(f"bench-watch: {exc} (in {args.repository}; pass --model / --repository)")
    files = dataset_files(args.archive, args.limit, version.manifest.input_shape)
    source = args.archive.name if args.archive.is_file() else "synthetic images"
    print(
        f"bench-watch: {args.model} v{version.version}, {len(files)} images ({source}), "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as scratch_name:
        scratch = Path(scratch_name)
        stage, inbox, out = scratch / "stage", scratch / "inbox", scratch / "out"
        for folder in (stage, inbox):
            folder.mkdir()
        for name, data in files:
            (stage / name).write_bytes(data)
        chosen = ["--model", args.model, "--repository", str(args.repository)]
        if args.version_label:
            chosen += ["--version-label", args.version_label]
        run_rate = clfbatch_run(stage, scratch / "run.csv", chosen)
        print(f"  clfbatch run, same files:        {run_rate:>8,.0f} images/s", flush=True)

        log = args.log or scratch / "log"
        daemon = Daemon(inbox, out, chosen + args.daemon_args.split(), log)
        tail = ReportTail(out / "labels.csv")
        cpu_before = cpu_seconds(daemon.process.pid)
        started = time.time()
        for name, _ in files:
            os.rename(stage / name, inbox / name)
        dropped = time.time() - started
        finished = tail.wait(len(files), timeout=1800)
        cpu_after = cpu_seconds(daemon.process.pid)
        burst_rate = len(files) / (finished - started)
        print(
            f"  watch, burst of {len(files)} (renamed in {dropped:.2f} s): "
            f"{burst_rate:>8,.0f} images/s = {burst_rate / run_rate:.0%} of clfbatch run "
            "(goal >= 70%)",
            flush=True,
        )
        if cpu_before is not None and cpu_after is not None:
            per_file = (cpu_after - cpu_before) / len(files) * 1000
            print(f"  daemon CPU during the burst: {per_file:.2f} ms per file", flush=True)

        closed: dict[str, float] = {}
        count = int(args.seconds * args.rate)
        begin = time.monotonic()
        for index in range(count):
            while time.monotonic() < begin + index / args.rate:  # watch rows while waiting
                tail.poll()
                time.sleep(0.002)
            name = f"steady_{index:05d}_{files[index % len(files)][0]}"
            with (inbox / name).open("wb") as handle:
                handle.write(files[index % len(files)][1])
            closed[name] = time.time()
        tail.wait(len(files) + count, timeout=120)
        daemon.stop()
        latencies = [(tail.seen[name] - at) * 1000 for name, at in closed.items()]
        print(
            f"  watch, steady {args.rate:g} files/s for {args.seconds:g} s ({count} files): "
            f"latency close -> report row p50 {percentile(latencies, 50):.0f} ms, "
            f"p99 {percentile(latencies, 99):.0f} ms, max {max(latencies):.0f} ms",
            flush=True,
        )
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
