"""Speed benchmark: replay examples/azure-conv.yaml (19,366 requests) and report requests per wall second.

Run: python benchmarks/bench_replay.py [SCENARIO] [--repeat N]
Target (issue: simulation core): >= 20,000 simulated requests per wall second on a 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from servesim import load_scenario, simulate

ROOT = Path(__file__).resolve().parents[1]


def best_of(scenario, repeat: int):
    """Simulate and summarize `repeat` times: (last result, its summary, best wall s, best CPU s)."""
    best = best_cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = simulate(scenario)
        summary = result.summary()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return result, summary, best, best_cpu


def children_cpu_s() -> float:
    """CPU seconds of this process's ended children: the step reduction's helper process
    (metrics/step_helper.py), whose CPU `time.process_time()` does not count."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", nargs="?", default=str(ROOT / "examples" / "azure-conv.yaml"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    scenario = load_scenario(args.scenario, args.set)
    result, summary, best, best_cpu = best_of(scenario, args.repeat)
    n = summary["num_requests"]
    print(f"{Path(args.scenario).name}: {n:,} requests, {summary['num_steps']:,} steps "
          f"({result.num_fast_forwarded_steps:,} fast-forwarded), {result.num_events:,} events")
    print(f"best of {args.repeat}: {best:.3f} s wall (simulate + summary) -> {n / best:,.0f} requests/s; "
          f"{best_cpu:.3f} s CPU -> {n / best_cpu:,.0f} requests per CPU second")


if __name__ == "__main__":
    main()
