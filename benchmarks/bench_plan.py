"""Planner speed: a search over 500 simulated candidates of the Azure conversation trace.

Llama-3.1-8B, TTFT 2 s / TPOT 100 ms at 90%, most goodput per GPU; 5 GPU types x TP 1-2 x 5 max_num_seqs
x 5 max_num_batched_tokens x 2 schedulers = 500 candidates, every one simulated
(search.keep_ratio 0; with this objective no candidate is excluded unsimulated), each probe at least 1,000 requests / 60 s of arrivals. Prints wall time,
simulations and candidates simulated per minute. Target: under 5 minutes on 2 cores with the
local executor. Run: python benchmarks/bench_plan.py [--jobs 2] [--executor ray]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import yaml

from servesim.planner import plan

PLAN = {
    "scenario": {"model": "llama-3.1-8b", "workload": {"trace": "azure-conv"}},
    "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
    "traffic": {"rate_per_s": 20.0},
    "space": {"gpu": ["h100-sxm", "h200", "a100-80gb", "a100-40gb", "l40s"], "tp": [1, 2],
              "max_num_seqs": [32, 64, 128, 256, 512], "max_num_batched_tokens": [1024, 2048, 4096, 8192, 16384],
              "scheduler": ["vllm", "sarathi"]},
    "search": {"objective": "goodput_per_gpu", "keep_ratio": 0.0},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--executor", default="local")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.yaml"
        path.write_text(yaml.safe_dump(PLAN))
        t0 = time.perf_counter()
        outcome = plan(path, Path(tmp) / "out", executor=args.executor, jobs=args.jobs, use_cache=False)
        wall = time.perf_counter() - t0
    # CPU seconds of this process and its workers: on a shared machine, cpu / jobs is the wall time
    # the search would take with the cores to itself
    cpu = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    r = outcome.search
    simulated = sum(1 for e in r.ranked if e.goodput is not None)
    print(f"{len(r.ranked)} candidates, {simulated} simulated ({r.counters.probes_run} simulations) in {wall:.1f} s "
          f"with {args.executor} x {args.jobs}: {simulated / wall * 60:.0f} candidates/min, "
          f"{r.counters.probes_run / wall:.1f} simulations/s; {cpu:.0f} CPU s ({cpu / args.jobs:.0f} s per core)")
    best = r.best
    print(f"best: {best.replicas} x {best.cand.label}, ${best.cost_usd_h:.2f}/h" if best else "no candidate meets the SLO")


if __name__ == "__main__":
    main()
