"""Configuration search: static first pass, then goodput bisection of the promising candidates.

1. Expand the space; price every GPU; build each candidate's performance model.
2. Static pass (no simulation): drop what does not fit in memory or cannot reach the SLO even
   unloaded; estimate each candidate's capacity; keep those whose estimate is within
   `keep_ratio` of the best (and at most `max_simulated`).
3. Simulate in waves of `wave_size`, best static estimates first. Every bisection of a wave
   knows the incumbent (the best result of earlier waves) and stops as soon as the candidate
   fails at the rate it would need to beat it. Waves make the pruning independent of timing.
4. Rank by the objective.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from servesim.errors import InputError
from servesim.planner.cache import ProbeCache
from servesim.planner.drive import Bisection, Counters, drive
from servesim.planner.goodput import Goodput, WorkloadShape, bisect_goodput, probe_requests, workload_shape
from servesim.planner.mapping import candidate_scenario
from servesim.planner.plan import with_prices
from servesim.planner.space import Candidate, PlanConfig, expand
from servesim.planner.static import StaticEval, build_candidate_perf, static_eval
from servesim.scenario import validate_scenario

Progress = Callable[[int, int, Counters], None]  # (candidates done, candidates to simulate, counters)


@dataclass
class Evaluated:
    """One candidate with everything known about it; rates are req/s."""

    cand: Candidate
    static: StaticEval
    status: str  # ok | misses traffic | no goodput | pruned: <why>
    goodput: Goodput | None = None
    at_goodput: dict | None = None  # probe summary at the goodput rate
    replicas: int = 1  # replicas of the deployment costed
    capacity_per_s: float = 0.0  # goodput of that deployment
    cost_usd_h: float | None = None

    @property
    def gpus(self) -> int:
        return self.replicas * self.cand.gpus_per_replica

    @property
    def per_gpu(self) -> float:
        return self.capacity_per_s / self.gpus

    @property
    def per_dollar(self) -> float | None:
        return self.capacity_per_s / self.cost_usd_h if self.cost_usd_h else None


@dataclass
class SearchResult:
    ranked: list[Evaluated]  # simulated candidates by objective, then the rest
    static_pick: Evaluated | None  # the best by the static estimate alone (AIConfigurator's method)
    shape: WorkloadShape
    base: dict[str, Any]
    counters: Counters
    wall_s: float
    traffic_per_s: float | None = None  # the plan's traffic.rate_per_s
    static_pick_check: dict | None = None  # the static pick simulated as it would be deployed, at the traffic

    @property
    def best(self) -> Evaluated | None:
        top = self.ranked[0] if self.ranked else None
        return top if top is not None and top.status == "ok" else None


def deployment(e: Evaluated, rate_per_s: float | None, measured_per_s: float) -> None:
    """Size and cost the deployment from the measured goodput (of cand.replicas, or of one replica)."""
    c = e.cand
    if c.replicas is None:
        n = math.ceil(rate_per_s / measured_per_s - 1e-9) if rate_per_s and measured_per_s > 0 else 1
        e.replicas, e.capacity_per_s = max(n, 1), measured_per_s * max(n, 1)
    else:
        e.replicas, e.capacity_per_s = c.replicas, measured_per_s
    e.cost_usd_h = e.gpus * c.price_usd_h if c.price_usd_h else None


def score(e: Evaluated, objective: str, rate_per_s: float | None) -> tuple:
    """Bigger is better; candidates that serve the traffic come first."""
    meets = e.capacity_per_s > 0 and (rate_per_s is None or e.capacity_per_s >= rate_per_s)
    if objective == "cost":
        return (meets, -(e.cost_usd_h or math.inf), e.per_gpu)
    if objective == "goodput_per_dollar":
        return (meets, e.per_dollar or 0.0, e.per_gpu)
    return (meets, e.per_gpu, -(e.cost_usd_h or math.inf))


def floor_rate(c: Candidate, inc: Evaluated | None, objective: str, rate_per_s: float | None) -> float | None:
    """The measured rate `c` must reach to tie the incumbent (inf: it cannot, whatever its goodput)."""
    if inc is None or inc.status != "ok":
        return None
    r = c.replicas or 1
    if objective == "goodput_per_gpu":
        return inc.per_gpu * r * c.gpus_per_replica
    if objective == "goodput_per_dollar":
        return inc.per_dollar * r * c.gpus_per_replica * c.price_usd_h
    per_replica_cost = c.gpus_per_replica * c.price_usd_h
    if c.replicas is not None:
        return rate_per_s if r * per_replica_cost <= inc.cost_usd_h * (1 + 1e-9) else math.inf
    n_max = math.floor(inc.cost_usd_h / per_replica_cost * (1 + 1e-9))
    return rate_per_s / n_max if n_max >= 1 else math.inf


def static_pass(plan: PlanConfig, base: dict, shape: WorkloadShape) -> list[Evaluated]:
    scn = validate_scenario(base, "scenario")
    cands = with_prices(expand(plan.space), plan.search.objective)
    out = []
    for c in cands:
        pm = build_candidate_perf(scn.model, c, scn.perf)
        st = static_eval(c, pm, scn.engine, shape, scn.slo.ttft_s, scn.slo.tpot_s)
        if not st.fits:
            status = f"pruned: does not fit ({st.reason})"
        elif st.zero_load_attainment < plan.goodput.target:
            status = f"pruned: SLO out of reach (at most {st.zero_load_attainment:.0%} unloaded)"
        else:
            status = "pending"
        out.append(Evaluated(c, st, status))
    return out


def _check_reachable(evals: list[Evaluated], target: float) -> None:
    if not any(e.static.fits for e in evals):
        big = max(evals, key=lambda e: e.static.kv_capacity_tokens)
        raise InputError(f"no candidate fits in memory: the largest KV cache ({big.cand.label}) holds "
                         f"{big.static.kv_capacity_tokens} tokens, the longest request needs more; "
                         "allowed: larger tp, a smaller dtype, GPUs with more memory")
    if not any(e.status == "pending" for e in evals):
        top = max((e for e in evals if e.static.fits), key=lambda e: e.static.zero_load_attainment)
        raise InputError(f"no candidate can meet the SLO even unloaded: the best ({top.cand.label}) attains at most "
                         f"{top.static.zero_load_attainment:.1%} < target {target:.0%}; loosen slo.ttft_s/tpot_s")


def _static_merit(e: Evaluated, objective: str) -> float:
    per_replica = e.static.capacity_per_s
    if objective in ("cost", "goodput_per_dollar"):
        return per_replica / (e.cand.gpus_per_replica * e.cand.price_usd_h)
    return per_replica / e.cand.gpus_per_replica


def select(evals: list[Evaluated], plan: PlanConfig) -> list[Evaluated]:
    """The promising candidates, best static merit first; the others get their pruning status."""
    pending = [e for e in evals if e.status == "pending"]
    merits = {id(e): _static_merit(e, plan.search.objective) for e in pending}
    pending.sort(key=lambda e: -merits[id(e)])  # stable: ties keep the space's order
    best = merits[id(pending[0])]
    keep = []
    for e in pending:
        if merits[id(e)] < plan.search.keep_ratio * best:
            e.status = f"pruned: static estimate below {plan.search.keep_ratio:g} x the best"
        elif plan.search.max_simulated is not None and len(keep) >= plan.search.max_simulated:
            e.status = "pruned: beyond search.max_simulated"
        else:
            keep.append(e)
    return keep


def run_search(plan: PlanConfig, base: dict, executor, cache: ProbeCache,
               progress: Progress | None = None) -> SearchResult:
    wall0 = time.perf_counter()
    shape = workload_shape(base, "scenario")
    evals = static_pass(plan, base, shape)
    _check_reachable(evals, plan.goodput.target)
    keep = select(evals, plan)
    objective, rate = plan.search.objective, plan.traffic.rate_per_s
    counters = Counters()
    best: Evaluated | None = None
    done = 0
    for start in range(0, len(keep), plan.search.wave_size):
        wave = keep[start:start + plan.search.wave_size]
        bisections = [_bisection(e, plan, base, shape, best if plan.search.early_stop else None) for e in wave]
        drive([b for b in bisections if b is not None], executor, cache, counters,
              (lambda: progress(done, len(keep), counters)) if progress else None)
        for e, b in zip(wave, bisections):
            _finish(e, b, objective, rate)
            if e.status == "ok" and (best is None or score(e, objective, rate) > score(best, objective, rate)):
                best = e
        done += len(wave)
        if progress:
            progress(done, len(keep), counters)
    simulated = [e for e in evals if e.goodput is not None or e.status.startswith("pruned: cannot beat")]
    simulated.sort(key=lambda e: score(e, objective, rate), reverse=True)
    seen = {id(e) for e in simulated}
    rest = [e for e in evals if id(e) not in seen]
    pick = _static_pick(evals, objective, rate)
    check = _check_pick(pick, plan, base, shape, executor, cache, counters) if pick and rate else None
    return SearchResult(simulated + rest, pick, shape, base, counters, time.perf_counter() - wall0, rate, check)


def _check_pick(pick: Evaluated, plan: PlanConfig, base: dict, shape: WorkloadShape, executor, cache: ProbeCache,
                counters: Counters) -> dict:
    """Simulate the static pick with the replicas the static estimate asked for, at the traffic's rate."""
    rate, g = plan.traffic.rate_per_s, plan.goodput
    n = pick.replicas
    size = probe_requests(g.num_requests, g.min_duration_s, rate / n)
    scenario = candidate_scenario(base, pick.cand, rate, shape.knob, n, size)
    probe = Bisection(_one_probe(rate), lambda _: scenario)
    drive([probe], executor, cache, counters)
    return dict(probe.summaries[rate], replicas=n)


def _one_probe(rate: float):
    """A 'bisection' that probes one rate and stops."""
    attained = yield rate
    return Goodput(rate, None, probes=[(rate, attained)])


def _bisection(e: Evaluated, plan: PlanConfig, base: dict, shape: WorkloadShape,
               incumbent: Evaluated | None) -> Bisection | None:
    c, g = e.cand, plan.goodput
    floor = floor_rate(c, incumbent, plan.search.objective, plan.traffic.rate_per_s)
    if floor == math.inf:
        e.status = "pruned: cannot beat the incumbent at any goodput"
        return None
    r = c.replicas or 1
    guess = r * (e.static.capacity_per_s or 0.5 * e.static.upper_per_s)
    sized = plan.traffic.rate_per_s if c.replicas is None and plan.search.objective == "cost" else None
    search = bisect_goodput(guess, g.target, g.rel_tol, g.max_probes, floor, sized)
    return Bisection(search, lambda rate: candidate_scenario(
        base, c, rate, shape.knob, r, probe_requests(g.num_requests, g.min_duration_s, rate)))


def _finish(e: Evaluated, b: Bisection | None, objective: str, rate: float | None) -> None:
    if b is None:
        return
    e.goodput, e.at_goodput = b.result, b.at_goodput
    if b.result.pruned:
        e.status = "pruned: cannot beat the incumbent"
        return
    deployment(e, rate, b.result.goodput_per_s)
    if b.result.goodput_per_s <= 0:
        e.status = "no goodput"
    elif rate is not None and e.capacity_per_s < rate:
        e.status = "misses traffic"
    else:
        e.status = "ok"


def _static_pick(evals: list[Evaluated], objective: str, rate: float | None) -> Evaluated | None:
    """What the static estimate alone would deploy (capacities as predicted, no simulation)."""
    best, best_score = None, None
    for e in evals:
        if not e.static.fits or e.static.capacity_per_s <= 0:
            continue
        shadow = Evaluated(e.cand, e.static, "ok")
        deployment(shadow, rate, (e.cand.replicas or 1) * e.static.capacity_per_s)
        s = score(shadow, objective, rate)
        if best_score is None or s > best_score:
            best, best_score = shadow, s
    return best if best_score is not None and best_score[0] else None
