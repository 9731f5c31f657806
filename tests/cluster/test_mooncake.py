"""Mooncake's conductor and overload admission: predictions, picks on hand-built views, the
rejection rules end to end, and the headline shapes on the Mooncake conversation trace
(numbers in docs/disaggregation.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.cluster.prediction import Predictor
from servesim.perf.estimate import prefill_time_s
from servesim.metrics.disaggregation import late_prefill_tokens
from servesim.perf import build_perf_model
from servesim.scenario import Scenario
from servesim.workload.request import RequestState
from tests.cluster.views import cluster, make_router, req, rv

ROOT = Path(__file__).resolve().parents[2]
PERF = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", Scenario().perf)


class _Engine:
    def __init__(self, chunk: int = 2048) -> None:
        self.perf = PERF
        self.config = type("C", (), {"max_num_batched_tokens": chunk})()


def test_prefill_prediction_sums_the_chunks_the_engine_would_run():
    t = prefill_time_s(PERF, 5000, 1000, 2048)
    steps = PERF.step_time_s([(2048, 1000)], ()) + PERF.step_time_s([(2048, 3048)], ()) \
        + PERF.step_time_s([(904, 5096)], ())
    assert t == pytest.approx(steps, rel=1e-12)
    pred = Predictor([_Engine()])
    # a fully cached prompt still computes its last token
    assert pred.prefill_s(0, 4096, 4096) == PERF.step_time_s([(1, 4095)], ())
    rate = PERF.step_time_s([(2048, 0)], ()) / 2048
    assert pred.ttft_s(0, 10_000, 4096, 0) == pytest.approx(10_000 * rate + prefill_time_s(PERF, 4096, 0, 2048))


def _conductor(**params):
    router = make_router("mooncake", **params)
    router.bind([type("R", (), {"engine": _Engine()})() for _ in range(3)])
    return router


def test_conductor_trades_queue_time_against_the_cached_prefix():
    router = _conductor()
    prompt = req(0, prompt=8192, hash_ids=tuple(range(16)), block=512)
    # equal queues: the instance holding 12 of the 16 blocks wins
    view = cluster([rv(0, prefill=4000), rv(1, prefill=4000), rv(2, prefill=4000)], cached={1: 12})
    assert router.route(prompt, view) == 1
    assert prompt.extra["ttft_pred_s"] == pytest.approx(router.estimates(prompt, view)[1])
    # a long enough queue there outweighs the hit: the estimate, not the hit, decides
    view = cluster([rv(0, prefill=4000), rv(1, prefill=40_000), rv(2, prefill=8000)], cached={1: 12})
    est = router.estimates(prompt, view)
    assert est[1] > est[0] and router.route(prompt, view) == 0
    # load-only: the hit is ignored, the shortest queue wins
    load_only = _conductor(cache_aware=False)
    view = cluster([rv(0, prefill=4000), rv(1, prefill=4001), rv(2, prefill=4000)], cached={1: 12})
    assert load_only.route(prompt, view) == 0


# ---- end to end ------------------------------------------------------------------------------

SMALL = ["workload.trace=null", "workload.num_requests=120", "workload.arrival.rate_per_s=40",
         "workload.lengths.prompt_tokens=3000", "workload.lengths.output_tokens=200", "router=mooncake",
         "pools=[{name: p, role: prefill, replicas: 2}, {name: d, role: decode}]"]


def _small(*sets: str):
    return simulate(load_scenario(None, SMALL + list(sets)))


def test_rejection_at_decode_wastes_prefills_and_early_rejection_none():
    per_stage = _small("disaggregation.rejection=decode", "disaggregation.tbt_slo_s=0.012",
                       "disaggregation.ttft_slo_s=1000")
    rej = per_stage.summary()["disaggregation"]["rejection"]
    at_decode = [r for r in per_stage.requests if r.extra.get("reject_reason", "").startswith("decode load")]
    assert rej["rejected_at_decode"] == len(at_decode) > 0
    assert all(r.num_output_tokens == 1 for r in at_decode)  # the prefill instance emitted the first token
    assert rej["rejected_after_prefill_tokens"] == sum(r.prompt_len - r.num_cached_tokens for r in at_decode)
    early = _small("disaggregation.rejection=early", "disaggregation.tbt_slo_s=0.012",
                   "disaggregation.ttft_slo_s=1000")
    erej = early.summary()["disaggregation"]["rejection"]
    assert erej["rejected_at_decode"] == erej["rejected_after_prefill_tokens"] == 0
    assert erej["rejected_at_arrival"] > 0
    assert all(r.first_token_s is None for r in early.requests if r.state == RequestState.REJECTED)


def test_prefill_load_rejects_at_arrival_with_every_policy():
    for policy in ("decode", "early", "predictive"):
        res = _small(f"disaggregation.rejection={policy}", "disaggregation.ttft_slo_s=0.5")
        s = res.summary()
        assert s["disaggregation"]["rejection"]["rejected_at_arrival"] > 0
        assert s["num_finished"] + s["disaggregation"]["rejection"]["rejected_at_arrival"] == 120


def test_yaml_off_is_the_literal_off():
    s = load_scenario(None, SMALL + ["disaggregation.rejection=off", "disaggregation.conditional=off"])
    assert s.disaggregation.rejection == "off" and s.disaggregation.conditional == "off"


# ---- headlines on the Mooncake trace -------------------------------------------------------------

@cache
def _trace(*sets: str):
    res = simulate(load_scenario(ROOT / "examples/mooncake-pd.yaml", ["workload.trace.end_s=300", *sets]))
    return res.summary(), res.table.cols


def test_cache_aware_prefill_choice_beats_load_only_and_random():
    aware, _ = _trace("router.name=mooncake")
    load, _ = _trace("router.name=mooncake", "router.cache_aware=false")
    rand, _ = _trace("router.name=random")
    assert aware["prefix_cache_hit_rate"] > 1.5 * load["prefix_cache_hit_rate"]
    assert load["prefix_cache_hit_rate"] > rand["prefix_cache_hit_rate"]
    for q in ("mean", "p90"):
        assert aware["ttft_s"][q] < 0.95 * load["ttft_s"][q] < 0.95 * rand["ttft_s"][q]
    assert rand["ttft_s"]["mean"] > 2 * load["ttft_s"]["mean"]


def test_predictive_early_rejection_wastes_the_least_prefill_under_overload():
    wasted = {}
    for policy in ("off", "decode", "early", "predictive"):
        s, reqs = _trace("workload.trace.speedup=2", f"disaggregation.rejection={policy}")
        late = late_prefill_tokens(reqs, 10.0, 0.02)
        rej = s["disaggregation"].get("rejection", {"rejected_after_prefill_tokens": 0})
        wasted[policy] = rej["rejected_after_prefill_tokens"] + late
        if policy != "off":
            assert rej["wasted_prefill_tokens"] == wasted[policy]
        if policy == "decode":
            assert rej["rejected_at_decode"] > 0 and rej["rejected_after_prefill_tokens"] > 0
    assert wasted["predictive"] < wasted["early"] < wasted["decode"] < wasted["off"]
