"""Goodput: the highest request rate at which a target share of requests meets both SLOs.

The search is DistServe's bisection over the rate, written as a generator so that a driver can
run the probes of many candidates together (in parallel, through a cache): `bisect_goodput`
yields a rate to simulate and receives the SLO attainment measured there. Attainment is taken
to fall with the rate; the result brackets the goodput between the highest passing and the
lowest failing rate probed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np

from servesim.errors import InputError
from servesim.planner.mapping import RateKnob
from servesim.scenario import validate_scenario

# Closed-loop or rate-less arrival processes have no rate to turn.
_RATE_PROCESSES = ("poisson", "gamma", "weibull", "onoff", "servegen")
# How far above the first guess the bracket may grow while the top rate still passes.
MAX_EXPANSIONS = 6


@dataclass(frozen=True)
class WorkloadShape:
    """What the planner needs to know about the base workload (one sample of it)."""

    knob: RateKnob
    mean_prompt_tokens: float
    mean_output_tokens: float
    prompt_tokens: np.ndarray  # the sample, sorted
    output_tokens: np.ndarray  # the sample, sorted
    max_request_tokens: int  # longest prompt + output of the sample


def workload_shape(scenario: dict[str, Any], where: str = "scenario") -> WorkloadShape:
    """Sample the base workload once (as the simulation would, same seed) and find its rate knob."""
    from servesim.workload import build_workload

    scn = validate_scenario(scenario, where)
    wl = scn.workload
    if wl.sessions is not None or wl.programs is not None:
        raise InputError(f"{where}: goodput search needs independent requests; remove workload.sessions/programs")
    if wl.trace is None and wl.arrival.process not in _RATE_PROCESSES:
        raise InputError(f"{where}: workload.arrival.process {wl.arrival.process!r} has no rate to search; "
                         f"allowed: {', '.join(_RATE_PROCESSES)} or a trace")
    if wl.trace is not None:  # the slice at speedup 1 gives the natural rate
        wl = wl.model_copy(update={"trace": wl.trace.model_copy(update={"speedup": 1.0})})
    workload_seed, _ = np.random.SeedSequence(scn.seed).spawn(2)
    reqs = list(build_workload(wl, workload_seed).arrivals())
    if len(reqs) < 2:
        raise InputError(f"{where}: the workload has {len(reqs)} request(s); goodput needs at least 2")
    prompts = np.sort(np.array([r.prompt_len for r in reqs], dtype=np.int64))
    outputs = np.sort(np.array([r.output_len for r in reqs], dtype=np.int64))
    span_s = reqs[-1].arrival_s - reqs[0].arrival_s
    if wl.trace is not None and span_s <= 0:
        raise InputError(f"{where}: the trace slice has no time span; allowed: a slice with at least two timestamps")
    knob = RateKnob("trace", (len(reqs) - 1) / span_s) if wl.trace is not None else RateKnob("generator", 0.0)
    total = max(r.prompt_len + r.output_len for r in reqs)
    return WorkloadShape(knob, float(prompts.mean()), float(outputs.mean()), prompts, outputs, int(total))


@dataclass
class Goodput:
    """Result of one bisection; rates are req/s of the whole deployment."""

    goodput_per_s: float  # highest passing rate probed (0 if none passed)
    failing_per_s: float | None  # lowest failing rate probed (None if none failed)
    pruned: bool = False  # stopped early: fails at the rate it needed to beat the incumbent
    probes: list[tuple[float, float]] = field(default_factory=list)  # (rate, attainment) in probe order

    @property
    def step_per_s(self) -> float | None:
        """Width of the final bracket (the search's resolution)."""
        return None if self.failing_per_s is None else self.failing_per_s - self.goodput_per_s


def bisect_goodput(guess_per_s: float, target: float, rel_tol: float, max_probes: int,
                   floor_per_s: float | None = None, traffic_per_s: float | None = None
                   ) -> Generator[float, float, Goodput]:
    """Yield rates to probe, receive attainments; return the bracketed goodput.

    guess_per_s: first rate to try (the static estimate); floor_per_s: the rate the candidate
    must sustain to beat the incumbent; if it fails there the search stops (early stopping).
    traffic_per_s: when replicas are sized to a traffic, the rates that matter are traffic / n;
    the bracket is then resolved on those, so the replica count is exact (one or two more probes).
    """
    lo, hi = 0.0, None
    probes: list[tuple[float, float]] = []

    def probe(rate: float):
        attained = yield rate
        probes.append((rate, attained))
        return attained >= target

    if floor_per_s is not None and floor_per_s > 0:
        if not (yield from probe(floor_per_s)):
            return Goodput(0.0, floor_per_s, pruned=True, probes=probes)
        lo = floor_per_s
    rate = max(guess_per_s, lo * 2.0, 1e-3)
    for _ in range(MAX_EXPANSIONS + 1):  # grow until a rate fails
        if len(probes) >= max_probes:
            break
        if not (yield from probe(rate)):
            hi = rate
            break
        lo, rate = rate, rate * 2.0
    while hi is not None and len(probes) < max_probes and hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2.0
        if (yield from probe(mid)):
            lo = mid
        else:
            hi = mid
    while traffic_per_s and hi is not None and lo > 0:  # fewer replicas if traffic / (n - 1) is still open
        n = math.ceil(traffic_per_s / lo - 1e-9)
        fewer = traffic_per_s / (n - 1) if n > 1 else math.inf
        if fewer >= hi:
            break
        if (yield from probe(fewer)):
            lo = fewer
        else:
            hi = fewer
    return Goodput(lo, hi, probes=probes)


def probe_requests(num_requests: int, min_duration_s: float, rate_per_s: float) -> int:
    """Requests in a probe at `rate_per_s`: at least num_requests, and min_duration_s of arrivals."""
    return max(num_requests, math.ceil(rate_per_s * min_duration_s))


# Summary values kept per probe (the cache stores these, not whole runs).
def probe_summary(summary: dict) -> dict:
    """The probe's outcome: attainment and the latencies the planner reports."""
    return {
        "slo_attainment": summary.get("slo_attainment", 0.0),
        "ttft_p90_s": summary["ttft_s"].get("p90"),
        "tpot_p90_s": summary["tpot_s"].get("p90"),
        "ttft_p99_s": summary["ttft_s"].get("p99"),
        "tpot_p99_s": summary["tpot_s"].get("p99"),
        "requests_per_s": summary["throughput"]["requests_per_s"],
        "num_finished": summary["num_finished"],
        "num_requests": summary["num_requests"],
    }


def run_probe(scenario: dict[str, Any]) -> dict:
    """Simulate one scenario mapping (already validated once); runs in a worker (local process or Ray)."""
    from servesim.simulation import simulate

    return probe_summary(simulate(validate_scenario(scenario, "planned scenario")).summary())
