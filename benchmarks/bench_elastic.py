"""Autoscaling overhead: the whole Azure code trace (8,819 requests, ~1 hour) with each
autoscaler scaling 1-4 Llama-3.1-8B H100 replicas, against the fixed single replica.

Run: python benchmarks/bench_elastic.py [--scalers kpa,hpa]
Prints wall seconds, events, GPU-hours, cost and scale-ups per policy. Target: an elastic
replay of the hour stays within 3x the fixed replica's wall time (decisions are a few
thousand loop events; replica views are read arithmetically, never by stepping).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from servesim import load_scenario, simulate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "azure-code.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scalers", default="hpa,kpa,aibrix-apa,dynamo-planner,llm-d-wva,llumnix,forecast")
    args = ap.parse_args()
    base = simulate(load_scenario(EXAMPLE))
    print(f"{'fixed':16s} wall {base.wall_time_s:6.2f} s  events {base.num_events:7d}")
    for name in args.scalers.split(","):
        r = simulate(load_scenario(EXAMPLE, [f"autoscaler.name={name}", "autoscaler.max_replicas=4"]))
        e = r.summary()["elastic"]
        print(f"{name:16s} wall {r.wall_time_s:6.2f} s  events {r.num_events:7d}  GPU-h {e['gpu_hours']:.3f}  "
              f"${e['cost_usd']:.2f}  ups {e['num_scale_ups']}  ({r.wall_time_s / base.wall_time_s:.1f}x)")


if __name__ == "__main__":
    main()
