"""Workload benchmark: trace-reading speed and the memory of a long replay.

    python benchmarks/workload_replay.py              # 10 million rows (about 3 minutes)
    python benchmarks/workload_replay.py --rows 1e6

1. Requests per wall second produced by `Workload.arrivals()` for the shipped traces and a
   generated workload (what the simulation pays per request for its input).
2. A synthetic trace of --rows rows is written to a temporary .csv.gz and replayed in full
   in a child process; its peak resident memory is compared with the same process after
   importing servesim and replaying 1,000 rows. Streaming means the difference stays flat.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from servesim.workload import WorkloadConfig, build_workload
from servesim.workload.traces.writers import write_trace

CHILD = """
import resource, sys, time, numpy as np
from servesim.workload import WorkloadConfig, build_workload
cfg = WorkloadConfig.model_validate({"trace": sys.argv[1], "num_requests": int(sys.argv[2])})
t = time.perf_counter(); n = 0; last = 0.0
for req in build_workload(cfg, np.random.SeedSequence(0)).arrivals():
    n += 1; last = req.arrival_s
dt = time.perf_counter() - t
print(n, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, last)
"""


def rate(config: dict, repeat: int = 3) -> tuple[int, float]:
    best = float("inf")
    n = 0
    for _ in range(repeat):
        workload = build_workload(WorkloadConfig.model_validate(config), np.random.SeedSequence(0))
        t = time.perf_counter()
        n = sum(1 for _ in workload.arrivals())
        best = min(best, time.perf_counter() - t)
    return n, n / best


def replay_in_child(path: Path, limit: int) -> tuple[int, float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(limit)], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=float, default=10e6, help="rows of the long synthetic trace")
    args = parser.parse_args()
    rows = int(args.rows)

    print("1. Request production speed (best of 3, requests per wall second)")
    for label, cfg in [
        ("azure-conv replay", {"trace": "azure-conv"}),
        ("azure-code replay", {"trace": "azure-code"}),
        ("mooncake-conversation replay (hash ids)", {"trace": "mooncake-conversation"}),
        ("poisson + sharegpt, 100k", {"arrival": {"rate_per_s": 10}, "lengths": {"dataset": "sharegpt"}, "num_requests": 100000}),
        ("gamma cv 3 + uniform lengths, 100k", {"arrival": {"process": "gamma", "rate_per_s": 10, "cv": 3},
                                                 "lengths": {"prompt_tokens": [10, 4000]}, "num_requests": 100000}),
        ("servegen m-small 24 h at 5 req/s", {"arrival": {"process": "servegen", "model": "m-small", "rate_per_s": 5},
                                              "duration_s": 86400}),
    ]:
        n, per_s = rate(cfg, repeat=1 if "servegen" in label else 3)
        print(f"   {label:42} {n:>9,} requests  {per_s:>10,.0f} req/s  ({1e6 / per_s:.1f} us/request)")

    print(f"\n2. Long replay: {rows:,} rows")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.csv.gz"
        gen = {"arrival": {"process": "gamma", "rate_per_s": 100, "cv": 2}, "lengths": {"dataset": "sharegpt"},
               "num_requests": rows}
        t = time.perf_counter()
        write_trace(build_workload(WorkloadConfig.model_validate(gen), np.random.SeedSequence(1)).arrivals(), path)
        print(f"   wrote {path.stat().st_size / 2**20:,.0f} MiB gzip CSV in {time.perf_counter() - t:,.0f} s")
        n0, _, rss0 = replay_in_child(path, 1000)
        n, dt, rss = replay_in_child(path, rows)
        print(f"   replay of 1,000 rows:  peak RSS {rss0:,.0f} MiB")
        print(f"   replay of {n:,} rows: peak RSS {rss:,.0f} MiB (+{rss - rss0:,.1f} MiB), "
              f"{dt:,.0f} s, {n / dt:,.0f} req/s")


if __name__ == "__main__":
    main()
