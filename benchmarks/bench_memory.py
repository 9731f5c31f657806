"""Memory: peak RSS, CPU seconds and engine steps of open-loop Poisson runs with ShareGPT lengths.

Each size runs in a fresh process (peak RSS is per process), one after another. The run is
simulated as the CLI does (`keep_requests=False`: finished requests become table rows), then
summarised, its time series computed and its run folder written, so the peak covers the whole
of `servesim run`.

Load: 5 requests/s per replica by default. One Llama-3.1-8B replica on an H100 saturates at
about 6.75 req/s of ShareGPT requests (measured: offered 10 or 20 req/s, it completes 6.75), so
5 req/s is about 75 % of capacity, a realistic operating point (TTFT p50 0.08 s, p99 0.4 s, no
preemptions, about 11 engine steps per request). At 1 req/s (`--rate 1`) the replica is mostly
idle and decodes each request nearly alone: about 119 steps per request, the worst case for
the step log.

Run: python benchmarks/bench_memory.py [--sizes 100000,1000000] [--replicas 1] [--rate 5] [--interval 1]
     [--set KEY=VALUE ...]   # e.g. two tenants and andes: the fairness and QoE sections' memory
     python benchmarks/bench_memory.py --huge    # 10,000,000 requests, 1 replica, 5 req/s
     python benchmarks/bench_memory.py --scale   # 100 replicas x 1,000,000 requests at 300 req/s
Targets (issue 15): 1,000,000 requests in < 30 s and < 300 MB peak RSS; memory independent of
the number of requests for open-loop traces.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(num_requests: int, replicas: int, rate_per_s: float | None, keep: bool, interval_s: float | None,
        extra: list[str] = ()) -> dict:
    """Simulate, summarise and write one run in this process; returns its measurements."""
    from bench_replay import children_cpu_s  # (this folder is on the path: the run is this script)
    from servesim import load_scenario, simulate
    from servesim.output import write_run

    sets = ["workload.trace=null", "workload.arrival.process=poisson", "workload.lengths.dataset=sharegpt",
            f"workload.num_requests={num_requests}", f"replicas={replicas}"]
    if rate_per_s is not None:
        sets.append(f"workload.arrival.rate_per_s={rate_per_s}")
    if replicas > 1:
        sets.append("router.name=least-requests")
    if interval_s is not None:
        sets.append(f"output.timeseries_interval_s={interval_s}")
    sets += extra
    cpu0, helper0, wall0 = time.process_time(), children_cpu_s(), time.perf_counter()
    try:
        result = simulate(load_scenario(None, sets), keep_requests=keep)
    except TypeError:  # a baseline from before keep_requests (it kept every request)
        result = simulate(load_scenario(None, sets))
    cpu_sim, wall_sim = time.process_time() - cpu0, time.perf_counter() - wall0
    helper_s = children_cpu_s() - helper0  # the step reduction's helper process (metrics/step_helper.py)
    peak_sim = _peak_rss_mb()
    held_mb = sum(r.stats.nbytes() for r in result.replicas) / 1e6
    partials = [r.stats.parts for r in result.replicas if hasattr(r.stats, "parts")]  # (a baseline holds them)
    spooled_mb = sum(s.path.stat().st_size for p in partials for s in (p.ranges, p.tokens, p.marks)
                     if s.path is not None) / 1e6
    try:  # the requests file written by a forked process while the summary is made (output.prepare_requests)
        from servesim.output import prepare_requests
    except ImportError:  # a baseline from before it
        prepare_requests = None
    prepared = prepare_requests is not None and prepare_requests(result)
    summary = result.summary()
    peak_summary = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        write_run(result, Path(tmp) / "run", summary)
        rows = sum(1 for _ in open(Path(tmp) / "run" / "timeseries.csv")) - 1
    cpu_total, wall_total = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"requests": summary["num_requests"], "steps": summary["num_steps"], "cpu_sim_s": round(cpu_sim, 2),
            "cpu_helper_s": round(helper_s, 2), "cpu_children_s": round(children_cpu_s() - helper0, 2),
            "wall_sim_s": round(wall_sim, 2), "wall_total_s": round(wall_total, 2), "prepared": bool(prepared),
            "cpu_total_s": round(cpu_total, 2), "peak_rss_sim_mb": peak_sim,
            "peak_rss_summary_mb": peak_summary, "peak_rss_mb": _peak_rss_mb(), "timeseries_rows": rows,
            "series_partials_mb": round(held_mb, 1), "series_partials_file_mb": round(spooled_mb, 1)}


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--rate", type=float, default=5.0, help="arrivals per second (default 5: ~75 %% of one replica)")
    ap.add_argument("--interval", type=float, help="output.timeseries_interval_s (default: the scenario's, 1 s)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another scenario override, e.g. scheduler.name=andes or "
                    "'workload.attributes.tenants={a: 1, b: 1}' (the summary sections' memory)")
    ap.add_argument("--keep-requests", action="store_true", help="keep the Request objects (Python API default)")
    ap.add_argument("--scale", action="store_true", help="100 replicas x 1,000,000 requests at 300 req/s")
    ap.add_argument("--huge", action="store_true", help="10,000,000 requests on one replica at 5 req/s (streamed: "
                    "about 20 CPU minutes)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale:
        args.sizes, args.replicas, args.rate = "1000000", 100, 300.0
    if args.huge:
        args.sizes, args.replicas = "10000000", 1
    if args.child is not None:
        print(json.dumps(one(args.child, args.replicas, args.rate, args.keep_requests, args.interval, args.set)))
        return
    for n in map(int, args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--replicas", str(args.replicas)]
        cmd += ["--rate", str(args.rate)] if args.rate is not None else []
        cmd += ["--keep-requests"] if args.keep_requests else []
        cmd += ["--interval", str(args.interval)] if args.interval is not None else []
        cmd += [f"--set={s}" for s in args.set]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        per_req = out["peak_rss_mb"] * 1e6 / out["requests"]
        print(f"{out['requests']:>10,} requests x {args.replicas} replica(s): {out['steps']:,} steps, "
              f"CPU {out['cpu_sim_s']:.1f} s simulate (+ {out['cpu_helper_s']:.1f} s in the helper) / "
              f"{out['cpu_total_s']:.1f} s with outputs (+ {out['cpu_children_s']:.1f} s in child processes; wall "
              f"{out['wall_sim_s']:.1f} / {out['wall_total_s']:.1f} s{', requests file forked' if out['prepared'] else ''}), "
              f"peak RSS {out['peak_rss_mb']:,} MB ({per_req:,.0f} B per request, "
              f"{out['peak_rss_mb'] * 1e6 / max(out['steps'], 1):.0f} B per step; high-water mark "
              f"{out['peak_rss_sim_mb']:,} MB at the end of the simulation, {out['peak_rss_summary_mb']:,} MB after "
              f"the summary; time-series partials {out['series_partials_mb']} MB held, "
              f"{out['series_partials_file_mb']} MB in files; {out['timeseries_rows']:,} time-series rows)", flush=True)


if __name__ == "__main__":
    main()
