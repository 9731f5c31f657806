"""Autoscaling overhead: the whole Azure code trace (8,819 requests, ~1 hour) with each
autoscaler scaling 1-4 Llama-3.1-8B H100 replicas, against the fixed single replica.

Run: python benchmarks/bench_elastic.py [--scalers kpa,hpa] [--hours H]
Prints wall seconds, events, GPU-hours, cost and scale-ups per policy. Target: an elastic
replay of the hour stays within 3x the fixed replica's wall time (decisions are a few
thousand loop events; replica views are read arithmetically, never by stepping).
`--hours H`: each policy on H simulated hours of Poisson arrivals at 0.5 req/s (ShareGPT
lengths), printing CPU seconds per simulated hour, which must not grow with H (a tick's
cost is independent of how long the run has been going).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from servesim import load_scenario, simulate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "azure-code.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scalers", default="hpa,kpa,aibrix-apa,dynamo-planner,llm-d-wva,llumnix,forecast")
    ap.add_argument("--hours", type=float, help="long Poisson runs of this many simulated hours instead")
    args = ap.parse_args()
    if args.hours:
        return long_runs(args.scalers.split(","), args.hours)
    base = simulate(load_scenario(EXAMPLE))
    print(f"{'fixed':16s} wall {base.wall_time_s:6.2f} s  events {base.num_events:7d}")
    for name in args.scalers.split(","):
        r = simulate(load_scenario(EXAMPLE, [f"autoscaler.name={name}", "autoscaler.max_replicas=4"]))
        e = r.summary()["elastic"]
        print(f"{name:16s} wall {r.wall_time_s:6.2f} s  events {r.num_events:7d}  GPU-h {e['gpu_hours']:.3f}  "
              f"${e['cost_usd']:.2f}  ups {e['num_scale_ups']}  ({r.wall_time_s / base.wall_time_s:.1f}x)")


def long_runs(scalers: list[str], hours: float, rate: float = 0.5) -> None:
    n = int(hours * 3600 * rate)
    for name in scalers:
        sets = ["workload.trace=null", "workload.arrival.process=poisson", f"workload.arrival.rate_per_s={rate}",
                f"workload.num_requests={n}", "workload.lengths.dataset=sharegpt", f"autoscaler.name={name}",
                "autoscaler.min_replicas=1", "autoscaler.max_replicas=4"]
        scenario = load_scenario(None, sets)
        t0 = time.process_time()
        r = simulate(scenario)
        cpu = time.process_time() - t0
        print(f"{name:16s} {hours:g} h  {n:,} requests  CPU {cpu:6.2f} s  ({cpu / hours:5.2f} s per simulated hour)  "
              f"ticks {len(r.scale_events):,}")


if __name__ == "__main__":
    main()
