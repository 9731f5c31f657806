"""Cluster speed: the Azure conversation trace on 1, 8 and 64 replicas behind a router that
reads live replica state at every arrival; simulated requests per wall and CPU second and
the share of engine steps that were fast-forwarded. CPU seconds are the loop's process; the step
log's reduction runs beside it in a helper process when a second core is there, whose CPU
seconds are printed apart.

Run: python benchmarks/bench_cluster.py [--replicas 1,8,64] [--router least-requests] [--repeat 3]
     python benchmarks/bench_cluster.py --scale   # 100 replicas, 1,000,000 streamed requests: peak memory
Target (issue: clusters): >= 20,000 simulated requests per wall second with 8 replicas.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from bench_replay import best_of, children_cpu_s  # (this folder is on the path when run as a script)
from servesim import load_scenario, simulate

ROOT = Path(__file__).resolve().parents[1]


def bench(replicas: int, router: str, repeat: int) -> None:
    scenario = load_scenario(ROOT / "examples/cluster-azure-conv.yaml",
                             [f"replicas={replicas}", f"router.name={router}"])
    children0 = children_cpu_s()
    result, summary, best, best_cpu = best_of(scenario, repeat)
    helper_s = (children_cpu_s() - children0) / repeat  # the step log's helper process (metrics/step_helper.py)
    n = summary["num_requests"]
    share = result.num_fast_forwarded_steps / max(summary["num_steps"], 1)
    print(f"{replicas:4d} replicas ({router}): {n:,} requests, {summary['num_steps']:,} steps, "
          f"{share:.2%} fast-forwarded, {result.num_events:,} events; best of {repeat}: {best:.2f} s wall "
          f"-> {n / best:,.0f} req/s; {best_cpu:.2f} s CPU -> {n / best_cpu:,.0f} req per CPU s "
          f"(+ {helper_s:.2f} s CPU in the helper, mean)", flush=True)


def scale() -> None:
    scenario = load_scenario(None, [
        "workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=300",
        "workload.num_requests=1000000", "workload.lengths.dataset=sharegpt", "replicas=100",
        "router.name=least-requests"])
    t0 = time.perf_counter()
    result = simulate(scenario, keep_requests=False)  # as the CLI runs: finished requests become rows
    summary = result.summary()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"100 replicas, {summary['num_requests']:,} requests ({summary['num_finished']:,} finished): "
          f"{time.perf_counter() - t0:.1f} s wall, peak RSS {peak_mb:,.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", default="1,8,64")
    ap.add_argument("--router", default="least-requests")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", action="store_true")
    args = ap.parse_args()
    if args.scale:
        return scale()
    for n in map(int, args.replicas.split(",")):
        bench(n, args.router, args.repeat)


if __name__ == "__main__":
    main()
