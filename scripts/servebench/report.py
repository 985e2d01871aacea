"""The benchmark's tables and goal lines (issue 11), all ratios from the one run."""

from __future__ import annotations

from dataclasses import dataclass

from servebench.load import Outcome

Limits = dict[tuple[str, int], tuple[float, float]]  # (model, batch) -> (images/s, p50 s)


@dataclass(frozen=True)
class Row:
    server: str
    model: str
    images: int  # per request
    concurrency: int
    outcome: Outcome
    cpu_per_request: float  # server CPU seconds
    formed: float  # mean images per model call (clfserve), else images per request
    rates: tuple[float, ...] = ()  # requests/s of every round (the row is the median one)

    @property
    def image_rate(self) -> float:
        return self.outcome.rate * self.images


def print_rows(rows: list[Row], limits: Limits) -> None:
    print(f"{'server':<9} {'model':<8} {'img/req':>7} {'conc':>4} {'req/s':>7} {'img/s':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} {'errors':>6} {'batch':>5} "
          f"{'limit img/s':>11} {'of limit':>8}  rounds req/s")  # fmt: skip
    for r in rows:
        limit = limits[r.model, max(1, round(r.formed))][0]
        errors = sum(r.outcome.errors.values())
        print(f"{r.server:<9} {r.model:<8} {r.images:>7} {r.concurrency:>4} {r.outcome.rate:>7.0f} "
              f"{r.image_rate:>8.0f} {r.outcome.p50 * 1e3:>7.2f} {r.outcome.p99 * 1e3:>7.2f} "
              f"{r.cpu_per_request * 1e3:>10.3f} {errors:>6} {r.formed:>5.1f} {limit:>11.0f} "
              f"{r.image_rate / limit:>8.0%}  {' '.join(f'{x:.0f}' for x in r.rates)}")  # fmt: skip
    print("in-process limit (SavedModel signature, no server): "
          + ", ".join(f"{m} batch {b}: {rate:.0f} img/s, p50 {p50 * 1e3:.2f} ms"
                      for (m, b), (rate, p50) in sorted(limits.items())))  # fmt: skip


def _goal(text: str, met: bool) -> None:
    print(f"goal: {text}: {'met' if met else 'MISSED'}")


def print_goals(rows: list[Row], limits: Limits) -> None:
    at = {(r.server, r.model, r.images, r.concurrency): r for r in rows}
    if not {"echo", "naive", "clfserve"} <= {r.server for r in rows}:
        return
    ours64, echo64, naive64 = (at[s, "mnist", 1, 64] for s in ("clfserve", "echo", "naive"))
    share = ours64.outcome.rate / echo64.outcome.rate
    _goal(f"concurrency 64 >= 70% of echo req/s: {share:.0%}", share >= 0.7)
    times = ours64.outcome.rate / naive64.outcome.rate
    _goal(f"concurrency 64 >= 3x naive: {times:.2f}x", times >= 3)
    ours1, echo1 = at["clfserve", "mnist", 1, 1], at["echo", "mnist", 1, 1]
    budget = echo1.outcome.p50 + limits["mnist", 1][1] + 0.0002
    _goal(f"concurrency 1 p50 {ours1.outcome.p50 * 1e3:.2f} ms <= echo p50 + model batch-1 p50 "
          f"+ 0.2 ms = {budget * 1e3:.2f} ms", ours1.outcome.p50 <= budget)  # fmt: skip
    ours32 = at["clfserve", "mnist", 32, 4]
    share = ours32.image_rate / limits["mnist", 32][0]
    _goal(f"32 images/request >= 90% of the in-process limit at batch 32: {share:.0%}",
          share >= 0.9)  # fmt: skip
    cifar = at["clfserve", "cifar10", 1, 16]
    share = cifar.image_rate / limits["cifar10", max(1, round(cifar.formed))][0]
    _goal(f"cifar10 concurrency 16 >= 90% of the in-process limit at the batch formed "
          f"({cifar.formed:.1f}): {share:.0%}", share >= 0.9)  # fmt: skip
    below = [
        f"{r.model}/{r.images}/{r.concurrency}"
        for r in rows
        if r.server == "clfserve"
        and r.outcome.rate < at["naive", r.model, r.images, r.concurrency].outcome.rate
    ]
    _goal(f"no scenario below the naive server ({', '.join(below) or 'none'})", not below)


def print_overload(outcomes: tuple[Outcome, Outcome]) -> None:
    heavy, after = outcomes
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(heavy.errors.items())) or "none"
    only_exhausted = set(heavy.errors) <= {"StatusCode.RESOURCE_EXHAUSTED"}
    print(f"overload: concurrency 256 against --queue-bound 64: {heavy.rate:.0f} answered/s, "
          f"p99 of accepted {heavy.p99 * 1e3:.1f} ms, errors {codes}")  # fmt: skip
    _goal("the only errors are RESOURCE_EXHAUSTED", only_exhausted)
    _goal(
        f"recovers at once: concurrency 1 right after, {after.rate:.0f} req/s, "
        f"{sum(after.errors.values())} errors",
        not after.errors and after.answered > 0,
    )
