"""DistServe-style placement: how many prefill and decode replicas a fixed number of GPUs should
hold, found by simulating each split (the paper searches placements with its simulator).

`pd_splits(n)` lists the candidates for n replicas of one configuration: every split with at
least one prefill and one decode replica, plus all replicas mixed (the colocated baseline).
`search_pd_split` simulates each at a given request rate and ranks them by per-GPU goodput
(DistServe's objective: requests per second meeting both TTFT and TPOT SLOs, per GPU). A split
that leaves a pool empty is refused. (Not done: DistServe's per-phase parallelism search and
its goodput bisection over the rate; pass several rates to compare.)
"""

from __future__ import annotations

from dataclasses import dataclass

from servesim.errors import InputError
from servesim.scenario import load_scenario
from servesim.simulation import simulate


@dataclass(frozen=True)
class SplitResult:
    """One placement simulated at one rate."""

    num_prefill: int  # 0 with num_decode 0: every replica mixed
    num_decode: int
    rate_per_s: float
    goodput_per_gpu: float  # requests/s meeting both SLOs, per GPU
    slo_attainment: float

    @property
    def label(self) -> str:
        return f"{self.num_prefill}P{self.num_decode}D" if self.num_prefill else "colocated"


def pd_splits(num_replicas: int) -> list[tuple[int, int]]:
    """(prefill, decode) replica counts: colocated (0, 0) first, then 1P..(n-1)P."""
    if num_replicas < 2:
        raise InputError(f"a prefill/decode split needs at least 2 replicas (got {num_replicas})")
    return [(0, 0)] + [(p, num_replicas - p) for p in range(1, num_replicas)]


def pools_override(num_prefill: int, num_decode: int, num_replicas: int) -> str:
    """The `pools=` override of one split."""
    if num_prefill == 0 and num_decode == 0:
        return f"pools=[{{name: mixed, replicas: {num_replicas}}}]"
    if num_prefill < 1 or num_decode < 1:
        raise InputError(f"split {num_prefill}P{num_decode}D leaves a pool empty: both counts must be >= 1")
    return (f"pools=[{{name: prefill, role: prefill, replicas: {num_prefill}}}, "
            f"{{name: decode, role: decode, replicas: {num_decode}}}]")


def search_pd_split(base: list[str], num_replicas: int, rates_per_s: list[float],
                    splits: list[tuple[int, int]] | None = None) -> list[SplitResult]:
    """Simulate every split at every rate (`base`: --set overrides of the scenario, which
    should fix the workload and the SLOs); results best first by per-GPU goodput."""
    out = []
    for p, d in splits or pd_splits(num_replicas):
        pools = pools_override(p, d, p + d if p else num_replicas)
        for rate in rates_per_s:
            scenario = load_scenario(None, base + [pools, f"workload.arrival.rate_per_s={rate}"])
            gpus = sum(pool.replicas * (pool.tp or scenario.tp) for pool in scenario.pools)
            s = simulate(scenario).summary()
            out.append(SplitResult(p, d, rate, s["goodput_requests_per_s"] / gpus, s["slo_attainment"]))
    return sorted(out, key=lambda r: (-r.goodput_per_gpu, r.num_prefill, r.rate_per_s))
