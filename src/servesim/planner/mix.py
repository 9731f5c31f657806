"""Heterogeneous mixes (Mélange): the cheapest count of each GPU configuration for a traffic mix.

1. Capacity: the goodput of one replica of every candidate on every bucket of the mix
   (Poisson arrivals of that bucket's lengths), by the same bisection as the search.
2. Integer program (Mélange's formulation, solved with SciPy's `milp`, i.e. HiGHS): each
   bucket's rate is cut into `slice_factor` slices; binary x[s, g] puts slice s on type g,
   integer y[g] counts replicas of g; minimise sum_g price_g y_g subject to every slice placed
   and sum_s x[s, g] rate_s / capacity[bucket(s), g] <= y[g].
3. Verification: the ILP ignores queueing between buckets, so each pool is simulated with its
   share of every bucket (merged Poisson streams, a random split over its replicas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from servesim.planner.cache import ProbeCache
from servesim.planner.drive import Bisection, Counters, drive
from servesim.planner.goodput import bisect_goodput, probe_requests, run_probe
from servesim.planner.mapping import RateKnob, candidate_scenario
from servesim.planner.search import Evaluated
from servesim.planner.space import GoodputConfig, MixConfig
from servesim.sums import left_sum


@dataclass
class MixResult:
    types: list[str]  # candidate labels
    buckets: list[str]
    capacity_per_s: np.ndarray  # [bucket, type] goodput of one replica
    counts: dict[str, int]  # replicas per type (0 left out)
    assignment: dict[str, dict[str, float]]  # bucket -> type -> rate served, req/s
    cost_usd_h: float | None  # None: no feasible mix
    best_single: tuple[str, int, float] | None  # (type, replicas, cost) of the cheapest single type
    verified: dict[str, float] = field(default_factory=dict)  # type -> simulated SLO attainment


def bucket_workload(bucket, num_requests: int) -> dict[str, Any]:
    return {"arrival": {"process": "poisson", "rate_per_s": 1.0}, "num_requests": num_requests,
            "lengths": {"prompt_tokens": bucket.prompt_tokens, "output_tokens": bucket.output_tokens}}


def capacities(types: list[Evaluated], mix: MixConfig, base: dict, g: GoodputConfig, executor,
               cache: ProbeCache, counters: Counters) -> np.ndarray:
    runs = []
    for bucket in mix.buckets:
        scenario = dict(base, workload=bucket_workload(bucket, g.num_requests))
        for e in types:
            guess = e.static.capacity_per_s or 1.0
            runs.append(Bisection(bisect_goodput(guess, g.target, g.rel_tol, g.max_probes),
                                  lambda rate, s=scenario, c=e.cand: candidate_scenario(
                                      s, c, rate, RateKnob("generator", 0.0), 1,
                                      probe_requests(g.num_requests, g.min_duration_s, rate))))
    drive(runs, executor, cache, counters)
    return np.array([b.result.goodput_per_s for b in runs]).reshape(len(mix.buckets), len(types))


def solve_mix(rates: np.ndarray, cap: np.ndarray, prices: np.ndarray, slice_factor: int):
    """Mélange's ILP. rates[b]: req/s per bucket; cap[b, g]: req/s per replica; prices[g]: $/h per replica.

    Returns (counts[g], served[b, g]) or None when some bucket fits no type."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    nb, ng = cap.shape
    ns = nb * slice_factor
    slice_rate = np.repeat(rates / slice_factor, slice_factor)
    bucket_of = np.repeat(np.arange(nb), slice_factor)
    nx = ns * ng  # x[s, g] flattened row-major, then y[g]
    cost = np.concatenate([np.zeros(nx), prices])
    upper = np.concatenate([(cap[bucket_of] > 0).astype(float).ravel(), np.full(ng, np.inf)])
    if np.any(upper[:nx].reshape(ns, ng).sum(axis=1) == 0):
        return None
    place = np.zeros((ns, nx + ng))
    load = np.zeros((ng, nx + ng))
    for s in range(ns):
        place[s, s * ng:(s + 1) * ng] = 1.0
        for j in range(ng):
            if cap[bucket_of[s], j] > 0:
                load[j, s * ng + j] = slice_rate[s] / cap[bucket_of[s], j]
    load[np.arange(ng), nx + np.arange(ng)] = -1.0
    res = milp(cost, integrality=np.ones(nx + ng), bounds=Bounds(np.zeros(nx + ng), upper),
               constraints=[LinearConstraint(place, 1, 1), LinearConstraint(load, -np.inf, 0)])
    if not res.success:
        return None
    x = np.round(res.x[:nx]).reshape(ns, ng)
    counts = np.round(res.x[nx:]).astype(int)
    served = np.zeros((nb, ng))
    np.add.at(served, bucket_of, x * slice_rate[:, None])
    return counts, served


def write_pool_trace(path: Path, buckets, rates_per_s: list[float], num_requests: int, seed: int) -> float:
    """Merged Poisson streams of the buckets at the given rates as a trace CSV; returns its total rate."""
    rng = np.random.default_rng(seed)
    total = left_sum(rates_per_s)
    rows = []
    for bucket, rate in zip(buckets, rates_per_s):
        n = max(1, round(num_requests * rate / total)) if rate > 0 else 0
        times = np.cumsum(rng.exponential(1.0 / rate, n)) if n else []
        for t in times:
            rows.append((float(t), _draw(rng, bucket.prompt_tokens), _draw(rng, bucket.output_tokens)))
    rows.sort()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("arrival_s,prompt_len,output_len\n")
        f.writelines(f"{t!r},{p},{o}\n" for t, p, o in rows)
    return total


def _draw(rng, spec) -> int:
    return int(spec) if isinstance(spec, int) else int(rng.integers(spec[0], spec[1] + 1))


def plan_mix(types: list[Evaluated], mix: MixConfig, base: dict, g: GoodputConfig, executor, cache: ProbeCache,
             counters: Counters, work_dir: Path) -> MixResult:
    cap = capacities(types, mix, base, g, executor, cache, counters)
    shares = np.array([b.share for b in mix.buckets])
    rates = mix.rate_per_s * shares / shares.sum()
    prices = np.array([e.cand.gpus_per_replica * (e.cand.price_usd_h or 0.0) for e in types])
    labels, names = [e.cand.label for e in types], [b.name for b in mix.buckets]
    singles = [(labels[j], math.ceil(sum(rates[b] / cap[b, j] for b in range(len(rates))) - 1e-9))
               for j in range(len(types)) if np.all(cap[:, j] > 0)]
    best_single = min(((n, c, c * prices[labels.index(n)]) for n, c in singles), key=lambda t: t[2], default=None)
    solved = solve_mix(rates, cap, prices, mix.slice_factor)
    if solved is None:
        return MixResult(labels, names, cap, {}, {}, None, best_single)
    counts, served = solved
    result = MixResult(labels, names, cap, {labels[j]: int(counts[j]) for j in range(len(types)) if counts[j]},
                       {names[b]: {labels[j]: float(served[b, j]) for j in range(len(types)) if served[b, j] > 0}
                        for b in range(len(names))}, float(counts @ prices), best_single)
    verify(result, types, mix, base, g, executor, work_dir, served, counts)
    return result


def verify(result: MixResult, types, mix, base, g, executor, work_dir: Path, served, counts) -> None:
    scenarios, labels = [], []
    for j, e in enumerate(types):
        if counts[j] == 0:
            continue
        path = work_dir / f"pool-{j}.csv"
        per_replica = served[:, j] / counts[j]
        size = probe_requests(g.num_requests, g.min_duration_s, float(per_replica.sum()))
        rate = write_pool_trace(path, mix.buckets, list(per_replica), size, j)
        trace_base = dict(base, workload={"trace": {"name": str(path)}})
        scenarios.append(candidate_scenario(trace_base, e.cand, rate, RateKnob("trace", rate)))
        labels.append(e.cand.label)
    for label, summary in zip(labels, executor.map(run_probe, scenarios)):
        result.verified[label] = summary["slo_attainment"]
