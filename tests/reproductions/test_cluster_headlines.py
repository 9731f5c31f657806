"""The cluster's headline effects, on real traces (numbers in docs/cluster.md).

- Prefix-aware routing (llm-d's scorers, SGLang's cache-aware tree) finds the replicas that
  hold a conversation's earlier turns: a higher prefix-cache hit rate and a lower TTFT than
  round-robin on the Mooncake conversation trace.
- On the bursty Azure code trace, power-of-two choices and least-outstanding-requests beat
  round-robin on tail TTFT; random is worst.
- Stale metrics make a router that reads the engines' scraped load pile requests onto the
  replica that looked idle at the last refresh: tail TTFT rises with the refresh interval.
"""

from __future__ import annotations

from functools import cache

import pytest

from servesim import load_scenario, simulate

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@cache
def mooncake(router: str) -> dict:
    return simulate(load_scenario(ROOT / "examples/cluster-mooncake.yaml",
                                  [f"router.name={router}", "workload.trace.end_s=600"])).summary()


@cache
def azure_code(*sets: str) -> dict:
    return simulate(load_scenario(ROOT / "examples/azure-code.yaml",
                                  ["replicas=8", "workload.trace.speedup=14", *sets])).summary()


@pytest.mark.parametrize("router", ["llm-d", "sglang-cache-aware"])
def test_prefix_aware_routing_beats_round_robin_on_mooncake(router):
    rr, aware = mooncake("round-robin"), mooncake(router)
    assert aware["prefix_cache_hit_rate"] > 2 * rr["prefix_cache_hit_rate"] > 0
    assert aware["ttft_s"]["p90"] < rr["ttft_s"]["p90"]
    assert aware["ttft_s"]["p99"] < rr["ttft_s"]["p99"]


@pytest.mark.parametrize("router", ["power-of-two", "least-requests"])
def test_load_aware_routing_cuts_tail_ttft_on_bursty_code_trace(router):
    rr, better = azure_code("router.name=round-robin"), azure_code(f"router.name={router}")
    assert better["ttft_s"]["p90"] < 0.97 * rr["ttft_s"]["p90"]
    assert better["ttft_s"]["p99"] < rr["ttft_s"]["p99"]
    assert better["cluster"]["load_imbalance"] < rr["cluster"]["load_imbalance"]
    random = azure_code("router.name=random")
    assert random["ttft_s"]["p99"] > rr["ttft_s"]["p99"]


def test_stale_metrics_pile_up_on_one_replica():
    # least-requests on the engine's scraped running + waiting counts (AIBrix-style), refreshed
    # every 0 (live), 10 ms, 100 ms and 1 s
    runs = [azure_code("router.name=least-requests", "router.count=engine", f"router.refresh_interval_s={dt}")
            for dt in (0.0, 0.01, 0.1, 1.0)]
    p99 = [r["ttft_s"]["p99"] for r in runs]
    # 10 ms is as good as live for the tail (stepping one by one agrees); beyond, every step of
    # staleness makes it worse
    assert abs(p99[1] - p99[0]) < 0.02 * p99[0] and p99[1] < p99[2] < p99[3]
    assert p99[2] > 1.2 * p99[0] and p99[3] > 4 * p99[0]
    assert runs[3]["cluster"]["load_imbalance"] > 2 * runs[0]["cluster"]["load_imbalance"]
    # the router's own in-flight counter is never stale: refreshes do not change its decisions
    inflight = azure_code("router.name=least-requests", "router.refresh_interval_s=1.0")
    assert inflight["ttft_s"] == azure_code("router.name=least-requests")["ttft_s"]
