"""Speed benchmark per scheduler: CPU microseconds per simulated request and the share of
fast-forwarded steps, on examples/azure-conv.yaml and on the same trace 10x faster (overload).

Run: python benchmarks/bench_schedulers.py [--scheduler NAME ...] [--end-s SECONDS] [--speedup X]
Target (issue 15): every scheduler >= 10,000 simulated requests per CPU second, both cases.
Use --end-s to bench a slice of the trace (the policies' cost per request grows with the queue).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from servesim import load_scenario, simulate
from servesim.replica.schedulers import available

ROOT = Path(__file__).resolve().parents[1]


def measure(name: str, speedup: float, end_s: float | None) -> tuple[int, float, float]:
    """(requests, CPU µs per request, fast-forwarded share of steps) of one run."""
    sets = [f"scheduler.name={name}", f"workload.trace.speedup={speedup}"]
    if end_s is not None:
        sets.append(f"workload.trace.end_s={end_s}")
    scenario = load_scenario(str(ROOT / "examples" / "azure-conv.yaml"), sets)
    c0 = time.process_time()
    result = simulate(scenario)
    summary = result.summary()
    cpu_s = time.process_time() - c0
    n = summary["num_requests"]
    return n, 1e6 * cpu_s / n, result.num_fast_forwarded_steps / max(1, summary["num_steps"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scheduler", action="append", default=[], help="repeatable; default: every scheduler")
    ap.add_argument("--speedup", type=float, action="append", default=[], help="repeatable; default: 1 and 10")
    ap.add_argument("--end-s", type=float, default=None, help="replay only the trace's first seconds")
    args = ap.parse_args()
    for name in args.scheduler or available():
        for speedup in args.speedup or [1.0, 10.0]:
            n, us, ff = measure(name, speedup, args.end_s)
            print(f"{name:12s} speedup {speedup:4g}: {n:6,} requests  {us:8.1f} µs CPU/request "
                  f"({1e6 / us:8,.0f} req/CPU s)  fast-forwarded {ff:5.1%}", flush=True)


if __name__ == "__main__":
    main()
