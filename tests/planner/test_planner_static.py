"""The static first pass: memory fit, the AIConfigurator-style estimate, the zero-load bound."""

from __future__ import annotations

import numpy as np

from servesim.perf import PerfConfig
from servesim.planner.goodput import WorkloadShape
from servesim.planner.mapping import RateKnob
from servesim.planner.space import SpaceConfig, expand
from servesim.planner.static import TTFT_QUEUEING_FACTOR, build_candidate_perf, prefill_s, static_eval
from servesim.replica.config import EngineConfig


def shape(prompts, outputs) -> WorkloadShape:
    p, o = np.sort(np.array(prompts)), np.sort(np.array(outputs))
    return WorkloadShape(RateKnob("generator", 0.0), float(p.mean()), float(o.mean()), p, o, int(max(p) + max(o)))


def evaluate(model, gpu, tp, sh, ttft=2.0, tpot=0.1, **space):
    cand = expand(SpaceConfig(gpu=[gpu], tp=[tp], **space))[0]
    pm = build_candidate_perf(model, cand, PerfConfig())
    return cand, pm, static_eval(cand, pm, EngineConfig(), sh, ttft, tpot)


def test_70b_does_not_fit_one_l40s_but_fits_four_h100():
    sh = shape([1000, 2000], [200, 300])
    _, _, st = evaluate("llama-3.1-70b", "l40s", 1, sh)
    assert not st.fits and st.reason == "the weights leave no room for a KV cache"
    _, _, st = evaluate("llama-3.1-70b", "h100-sxm", 4, sh)
    assert st.fits and st.kv_capacity_tokens > 100_000 and st.capacity_per_s > 0


def test_kv_cache_must_hold_the_longest_request():
    _, _, st = evaluate("llama-3.1-70b", "h100-sxm", 2, shape([1000, 120_000], [100, 100]))
    assert not st.fits and "the longest request needs 120100" in st.reason


def test_static_ttft_is_the_unloaded_prefill_times_the_fixed_factor():
    sh = shape([1000] * 4, [200] * 4)
    cand, pm, st = evaluate("llama-3.1-8b", "h100-sxm", 1, sh)
    assert st.ttft_s == TTFT_QUEUEING_FACTOR * pm.step_time_s([(1000, 0)], [])
    assert st.tpot_s <= 0.1 and st.batch >= 1
    assert 0 < st.capacity_per_s <= st.upper_per_s
    assert st.zero_load_attainment == 1.0


def test_tighter_tpot_means_smaller_batches_and_less_capacity():
    sh = shape([1000] * 4, [200] * 4)
    _, _, loose = evaluate("llama-3.1-8b", "h100-sxm", 1, sh, tpot=0.1)
    _, _, tight = evaluate("llama-3.1-8b", "h100-sxm", 1, sh, tpot=0.015)
    assert tight.batch < loose.batch and tight.capacity_per_s < loose.capacity_per_s


def test_zero_load_bound_counts_requests_whose_prefill_alone_meets_ttft():
    prompts = [100] * 6 + [30_000] * 4  # 60% short
    cand, pm, st = evaluate("llama-3.1-8b", "l40s", 1, shape(prompts, [50] * 10), ttft=0.5)
    assert prefill_s(pm, 30_000, 2048, True) > 0.5 > prefill_s(pm, 100, 2048, True)
    assert st.zero_load_attainment == 0.6


def test_chunked_prefill_splits_long_prompts_into_budget_steps():
    cand, pm, _ = evaluate("llama-3.1-8b", "h100-sxm", 1, shape([10], [10]))
    two = pm.step_time_s([(2048, 0)], []) + pm.step_time_s([(952, 2048)], [])
    assert prefill_s(pm, 3000, 2048, True) == two
    assert prefill_s(pm, 3000, 2048, False) == pm.step_time_s([(3000, 0)], [])
