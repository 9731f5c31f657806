"""Candidate -> scenario: the one place that knows which scenario keys a candidate sets.

Scenarios with a `replicas` key (the cluster: replicas behind a router) get the deployment as
is. Until that key exists, a deployment of n replicas is simulated as one replica at 1/n of
the rate: a uniformly random split of the traffic, which a round-robin or least-loaded
router can only beat, so goodput is estimated conservatively.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from servesim.planner.space import Candidate
from servesim.scenario import Scenario

# Switches on by itself once the cluster keys are part of the scenario schema.
CLUSTER_KEYS = "replicas" in Scenario.model_fields and "router" in Scenario.model_fields


@dataclass(frozen=True)
class RateKnob:
    """How a rate in req/s is set on the base workload.

    Traces replay faster or slower (`workload.trace.speedup` = rate / natural rate of the slice);
    generated workloads set `workload.arrival.rate_per_s`.
    """

    kind: str  # "trace" or "generator"
    natural_rate_per_s: float  # trace slice at speedup 1 (unused for generators)


def candidate_scenario(base: dict[str, Any], cand: Candidate, rate_per_s: float, knob: RateKnob,
                       replicas: int = 1, num_requests: int | None = None) -> dict[str, Any]:
    """The scenario (a plain mapping, not yet validated) that runs `cand` at `rate_per_s` in total.

    num_requests: the probe's size (None: the base workload's)."""
    s = copy.deepcopy(base)
    s.update(gpu=cand.gpu, tp=cand.tp, dtype=cand.dtype)
    perf = dict(s.get("perf") or {})
    if cand.expert_parallel:
        perf["expert_parallel"] = True
    s["perf"] = perf
    engine = dict(s.get("engine") or {})
    for key in ("max_num_seqs", "max_num_batched_tokens"):
        if getattr(cand, key) is not None:
            engine[key] = getattr(cand, key)
    engine["enable_chunked_prefill"] = cand.enable_chunked_prefill
    s["engine"] = engine
    sched = s.get("scheduler")
    same = isinstance(sched, dict) and sched.get("name", "vllm") == cand.scheduler
    s["scheduler"] = sched if same else {"name": cand.scheduler}  # keep the base's parameters for its own policy
    per_replica_rate = rate_per_s
    if CLUSTER_KEYS:
        s["replicas"] = replicas
        router = s.get("router")
        router = {"name": router} if isinstance(router, str) else dict(router or {})
        if router.get("name", "round-robin") != cand.router:
            router = {"name": cand.router}  # the base's parameters belong to its own router
        s["router"] = dict(router, name=cand.router)
    else:
        per_replica_rate = rate_per_s / replicas
    workload = copy.deepcopy(s.get("workload") or {})
    if knob.kind == "trace":
        trace = workload["trace"] if isinstance(workload["trace"], dict) else {"name": workload["trace"]}
        trace["speedup"] = per_replica_rate / knob.natural_rate_per_s
        workload["trace"] = trace
    else:
        arrival = dict(workload.get("arrival") or {})
        arrival["rate_per_s"] = per_replica_rate
        workload["arrival"] = arrival
    if num_requests is not None:
        workload["num_requests"] = num_requests
    s["workload"] = workload
    return s
