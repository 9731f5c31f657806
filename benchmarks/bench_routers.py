"""Router overhead: routing decisions per wall second for every registered router.

Run: python benchmarks/bench_routers.py [--replicas 16] [--decisions 20000]
Hand-built views (random loads, 64 snapshots cycled) and requests with shared 512-token prefix
blocks (20 system prompts of 4 blocks plus 2 unique blocks each), so cache-aware routers see
real matches. Measures `route` + `on_dispatch` only; building the views is the cluster's cost.
Target: every router >= 20,000 decisions per wall second on a 2-core machine, so routing stays
a small share of a replay's time (one decision per request).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from servesim.cluster.routers import available, get_router
from servesim.cluster.view import ClusterView, ReplicaView
from servesim.workload.request import Request


def _snapshots(num_replicas: int, rng: np.random.Generator) -> list[list[ReplicaView]]:
    return [[ReplicaView(i, "default", 0.0, int(rng.integers(0, 60)), int(rng.integers(0, 60)),
                         int(rng.integers(0, 10)), int(rng.integers(0, 4000)), 4000,
                         int(rng.integers(0, 50_000)), int(rng.integers(0, 20_000)))
             for i in range(num_replicas)] for _ in range(64)]


def _requests(n: int, rng: np.random.Generator) -> list[Request]:
    out = []
    for k in range(n):
        system = int(rng.integers(20))
        hash_ids = tuple(system * 10 + b for b in range(4)) + (10_000 + 2 * k, 10_001 + 2 * k)
        out.append(Request(id=k, arrival_s=k * 0.01, prompt_len=6 * 512 - 100, output_len=200, hash_ids=hash_ids))
    return out


def bench(name: str, num_replicas: int, decisions: int) -> float:
    rng = np.random.default_rng(0)
    snaps, reqs = _snapshots(num_replicas, rng), _requests(decisions, rng)
    cls = get_router(name)
    router = cls(cls.Params(), num_replicas, np.random.default_rng(1))
    cands = list(range(num_replicas))
    t0 = time.perf_counter()
    for k, req in enumerate(reqs):
        snap = snaps[k % 64]
        view = ClusterView(req.arrival_s, cands, snap.__getitem__, lambda i, r: 2)
        pick = router.route(req, view)
        if pick is not None:
            router.on_dispatch(req, pick, req.arrival_s)
    return decisions / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--decisions", type=int, default=20_000)
    args = ap.parse_args()
    for name in available():
        rate = bench(name, args.replicas, args.decisions)
        print(f"{name:20s} {rate:12,.0f} decisions/s  ({args.replicas} replicas)")


if __name__ == "__main__":
    main()
