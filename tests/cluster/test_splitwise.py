"""Splitwise: the mixed pool that absorbs bursts (its overflow rule, exactly) and phase
splitting on heterogeneous pools (numbers in docs/disaggregation.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from servesim import load_scenario, simulate
from servesim.perf.hardware import gpu_spec

ROOT = Path(__file__).resolve().parents[2]
BURST = ["workload.trace=null", "workload.arrival.rate_per_s=200", "workload.num_requests=40",
         "workload.lengths.prompt_tokens=3000", "workload.lengths.output_tokens=20", "router=least-tokens",
         "pools=[{name: p, role: prefill, replicas: 2}, {name: d, role: decode}, {name: m}]"]


def test_mixed_pool_takes_only_what_the_prompt_pool_cannot():
    res = simulate(load_scenario(None, BURST + ["disaggregation.overflow=splitwise"]))
    s = res.summary()
    whole = [r for r in res.requests if r.replica == 3]
    assert s["disaggregation"]["num_overflow"] == len(whole) > 0
    assert all(not r.moves for r in whole)  # served whole on the mixed replica
    assert s["disaggregation"]["num_transfers"] == 40 - len(whole)
    # 3000-token prompts, limit 8192 pending: the first two per prompt replica are taken
    # (an idle replica takes any prompt, a busy one while pending + 3000 <= 8192), so the
    # first four arrivals never overflow
    first = sorted(res.requests, key=lambda r: r.arrival_s)[:4]
    assert all(r.replica != 3 for r in first)
    # without the rule, the router treats the mixed replica as one more front replica
    off = simulate(load_scenario(None, BURST)).summary()["disaggregation"]
    assert "num_overflow" not in off and off["num_transfers"] < 40


def test_a_higher_limit_overflows_less():
    low = simulate(load_scenario(None, BURST + ["disaggregation.overflow=splitwise",
                                                "disaggregation.prompt_max_pending_batch_tokens=4096"]))
    high = simulate(load_scenario(None, BURST + ["disaggregation.overflow=splitwise",
                                                 "disaggregation.prompt_max_pending_batch_tokens=30000"]))
    assert low.summary()["disaggregation"]["num_overflow"] > high.summary()["disaggregation"]["num_overflow"]


@cache
def _conv(pools: str, *sets: str) -> dict:
    return simulate(load_scenario(ROOT / "examples/splitwise-pd.yaml", [f"pools={pools}", *sets])).summary()


MIXED = "[{name: p, role: prefill, replicas: 2}, {name: d, role: decode}, {name: m}]"


def test_mixed_pool_absorbs_the_bursts_a_fixed_split_cannot():
    """Four H100 TP-4 replicas each: a fixed 3:1 or 2:2 split against 2:1 plus a mixed replica."""
    with_mixed = _conv(MIXED)
    fixed = [_conv("[{name: p, role: prefill, replicas: %d}, {name: d, role: decode, replicas: %d}]" % pd)
             for pd in ((3, 1), (2, 2))]
    for f in fixed:
        assert with_mixed["slo_attainment"] > 1.5 * f["slo_attainment"]
    assert with_mixed["disaggregation"]["num_overflow"] > 0.1 * with_mixed["num_finished"]


def test_heterogeneous_token_pool_decodes_at_the_a100s_bandwidth():
    hh = _conv("[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 2}]",
               "workload.trace.speedup=4")
    ha = _conv("[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 2, gpu: a100-80gb}]",
               "workload.trace.speedup=4")
    assert ha["ttft_s"] == hh["ttft_s"]  # same prompt pool, first token from the prefill side
    ratio = ha["tpot_s"]["p50"] / hh["tpot_s"]["p50"]
    bw = gpu_spec("h100-sxm").hbm_bw_bytes_s / gpu_spec("a100-80gb").hbm_bw_bytes_s
    assert 0.8 * bw < ratio < 1.6 * bw  # decode is memory-bound
    assert ha["slo_attainment"] == hh["slo_attainment"] == 1.0  # both meet a 100 ms TPOT here
