#!/usr/bin/env python
"""clfserve against a bare echo server, a naive server and the bare model, in one run.

    python scripts/bench_serve.py [--seconds 10]          # `make bench-serve`
    python scripts/bench_serve.py --soak 600              # hot reloads under load, RSS

Starts on loopback: (a) a bare grpc.aio server answering KServe v2 ModelInfer with a fixed output
and no model, (b) the naive baseline (sync grpcio, thread pool, one SavedModel signature call per
request), (c) clfserve. The same load generator (tritonclient's asyncio client, FP32 model inputs,
its own process) drives each over the scenarios below, the three servers back to back for each
scenario, `--rounds` times over (each row: the median round; all rounds' rates printed beside
it); then the model alone is timed in-process at the batch sizes clfserve formed. It prints
images/s, p50/p99, server CPU per request and the issue-11 goals as ratios from this run, then an
overload run (concurrency 256 against `--queue-bound 64`). Models: the shipped tutorial versions
(mnist 1, cifar10 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from servebench import load as loadgen  # noqa: E402
from servebench.report import print_goals, print_overload, print_rows  # noqa: E402
from servebench.runs import Bench, overload, soak  # noqa: E402

# (model, images per request, concurrency)
SCENARIOS = [("mnist", 1, 1), ("mnist", 1, 16), ("mnist", 1, 64), ("mnist", 32, 4),
             ("cifar10", 1, 16)]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "trained")
    parser.add_argument("--versions", default="mnist=1,cifar10=1", help="model=version,...")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--servers", default="echo,naive,clfserve", help="which to run")
    parser.add_argument("--rounds", type=int, default=3, help="each point this often (median)")
    parser.add_argument("--serve-args", default="", help="extra clfserve flags, space-separated")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="soak test instead")
    parser.add_argument("--no-overload", action="store_true", help="skip the overload run")
    parser.add_argument("--rest", action="store_true", help="also: gRPC vs the REST port")
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        loadgen.main(args.drive)
        return 0
    if args.baseline:
        from servebench import servers

        kind, port_file, *pairs = args.baseline
        models = {k: Path(v) for k, v in (p.split("=", 1) for p in pairs)}
        servers.run(kind, Path(port_file), models)
        return 0

    versions = {
        name: args.repository / name / number
        for name, number in (pair.split("=", 1) for pair in args.versions.split(","))
    }
    scratch = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    bench = Bench(versions, scratch, args.serve_args.split())
    print(f"bench-serve: {', '.join(f'{n} v{p.name}' for n, p in versions.items())}; "
          f"{args.seconds:g} s per point; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f} at the start")  # fmt: skip
    if args.soak:
        soak(bench, args.soak)
        return 0
    rows = bench.scenarios(args.servers.split(","), SCENARIOS, args.seconds, args.rounds)
    limits = bench.limits(rows, args.seconds)
    print_rows(rows, limits)
    print_goals(rows, limits)
    if not args.no_overload and "clfserve" in args.servers:
        print_overload(overload(bench, args.seconds))
    if args.rest:
        from servebench.rest import print_rest, rest_scenarios

        print_rest(rest_scenarios(bench, args.seconds))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
