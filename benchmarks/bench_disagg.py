"""Disaggregation overhead: the azure-conv trace on 4 prefill + 4 decode replicas against the
same trace on 8 aggregated replicas (wall time; issue 10's target: within 2x).

Run: python benchmarks/bench_disagg.py [--end-s 600]
Both runs use the default model and GPU, round-robin routers and the trace's first `end_s`
seconds; each prints wall time, events, fast-forwarded share, and the P/D run's transfer stats.
"""

from __future__ import annotations

import argparse
import time

from servesim import load_scenario, simulate

POOLS = "pools=[{name: p, role: prefill, replicas: 4}, {name: d, role: decode, replicas: 4}]"


def run(sets: list[str]) -> tuple[float, float, dict]:
    cpu0 = time.process_time()
    res = simulate(load_scenario(None, sets))
    cpu_s = time.process_time() - cpu0  # CPU time: less sensitive than wall time to a shared machine
    s = res.summary()
    share = res.num_fast_forwarded_steps / max(s["num_steps"], 1)
    print(f"  wall {res.wall_time_s:.2f} s, cpu {cpu_s:.2f} s, {res.num_events} events, {s['num_steps']} steps, "
          f"{share:.0%} fast-forwarded, {s['num_finished']}/{s['num_requests']} finished, "
          f"TTFT p50 {s['ttft_s']['p50'] * 1e3:.0f} ms, TPOT p50 {s['tpot_s']['p50'] * 1e3:.1f} ms")
    return res.wall_time_s, cpu_s, s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--end-s", type=float, default=600.0)
    args = ap.parse_args()
    base = [f"workload.trace.end_s={args.end_s}"]
    print("8 aggregated replicas")
    agg_s, agg_cpu_s, _ = run(base + ["replicas=8"])
    print("4 prefill + 4 decode replicas")
    pd_s, pd_cpu_s, s = run(base + [POOLS])
    d = s["disaggregation"]
    print(f"  {d['num_transfers']} transfers, {d['kv_bytes'] / 1e9:.1f} GB, transfer p99 "
          f"{d['transfer_time_s']['p99'] * 1e3:.2f} ms, wait p99 {d['transfer_wait_s']['p99'] * 1e3:.2f} ms")
    print(f"ratio P/D / aggregated wall time: {pd_s / agg_s:.2f} (target <= 2); CPU time: {pd_cpu_s / agg_cpu_s:.2f}")


if __name__ == "__main__":
    main()
